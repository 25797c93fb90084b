//! The WebSocket hub server application, generic over the async runtime.
//!
//! This crate is what the `ws-tokio` and `ws-smol` binaries run; it sits
//! on top of the runtime-generic WebSocket layer (`ws-async`) and the
//! sans-IO hub (`ws-hub`), and an adapter brings it in through its
//! `server` feature. It holds the application, written once for every
//! runtime:
//!
//! - [`server`]: the hub server (hub task, admission, settings, metrics,
//!   `/healthz` and `/metrics`);
//! - [`bus`]: the Redis pub/sub bus between nodes (it speaks RESP itself,
//!   over the runtime's own sockets: no `redis` crate, so no tokio);
//! - [`echo`]: the echo server (the Autobahn server);
//! - [`autobahn`]: the Autobahn|Testsuite client procedure;
//! - [`hub_client`]: the `hub-client` subcommand (the hub client for
//!   scripts);
//! - [`cli`]: the command line both binaries share (TLS included:
//!   `--tls-cert`, SIGHUP reload, `gen-cert` from `ws_async::certgen`);
//! - [`shutdown`] and [`task`]: graceful shutdown and small task helpers.
//!
//! ```
//! use ws_server::server::{ServerConfig, Settings};
//!
//! // Every setting falls back to the cores' defaults, but for the frame
//! // limit, which is the hub's own (1 MiB).
//! let config = ServerConfig::from_settings(&Settings::default()).unwrap();
//! assert_eq!(config.ws.proto.max_handshake_size, ws_proto::Config::default().max_handshake_size);
//! assert_eq!(config.ws.proto.max_frame_size, 1 << 20);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod autobahn;
pub mod bus;
pub mod cli;
pub mod echo;
pub mod hub_client;
pub mod server;
pub mod shutdown;
pub mod task;
