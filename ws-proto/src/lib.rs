//! RFC 6455 WebSocket as a sans-IO state machine.
//!
//! `ws-proto` is the whole WebSocket protocol, both roles, with no IO: it
//! never reads a socket, never reads a clock, never draws randomness, never
//! spawns a thread and never blocks. Bytes and the current time go in;
//! events, outbound bytes and the next deadline come out. The same
//! [`Connection`] therefore runs under tokio, smol, a blocking loop, a test
//! with a virtual clock, or a fuzzer.
//!
//! What it covers: the opening handshake (server parses and validates the
//! request and writes 101 or a proper HTTP rejection; client builds the
//! request and checks the answer), every frame header form, masking (fast,
//! safe, word-at-a-time), fragmentation both ways, control frames with
//! automatic pong, the close handshake with code validation, incremental
//! fail-fast UTF-8 validation, and limits on head, frame and message size.
//! Protocol violations close with the right code (1002, 1007, 1009).
//!
//! permessage-deflate (RFC 7692) is negotiated when `Config::deflate` is
//! set: see [`deflate`] for the memory policy (no context held by an idle
//! connection in the default [`DeflateMode::Shared`]), [`Compressor`] to
//! share a compressor between connections, and
//! [`PreparedFrame::with_deflate`] to compress a broadcast once.
//!
//! # Driving a connection
//!
//! After every input (`handle_*`) or command (`send`, `close`, ...): drain
//! [`Connection::poll_event`] (frames are decoded there, one event at a
//! time, so replies to a message go out before anything a later frame
//! causes), write out what [`Connection::poll_transmit`] gives, and re-arm
//! a timer for [`Connection::poll_timeout`].
//!
//! ```
//! use std::time::Instant;
//! use ws_proto::{
//!     AcceptOptions, ClientRequest, CloseCode, Config, Connection, Event, Message,
//!     SeededMaskKeys,
//! };
//!
//! let now = Instant::now(); // the caller's clock, never read inside
//! let mut server = Connection::server(Config::default(), now).unwrap();
//! let request = ClientRequest::new("example.com", "/chat", *b"0123456789abcdef");
//! let keys = Box::new(SeededMaskKeys::new([42; 32])); // seed from the OS in real code
//! let mut client = Connection::client(Config::default(), request, keys, now).unwrap();
//!
//! // Move bytes between the two ends, as sockets would.
//! fn pump(from: &mut Connection, to: &mut Connection, now: Instant) {
//!     let mut wire = Vec::new();
//!     while from.poll_transmit(&mut wire).is_some() {}
//!     to.handle_data(now, &wire);
//! }
//!
//! pump(&mut client, &mut server, now);
//! let Some(Event::Request(req)) = server.poll_event() else { panic!() };
//! assert_eq!(req.path(), "/chat");
//! server.accept(AcceptOptions::default()).unwrap();
//! pump(&mut server, &mut client, now);
//! assert!(matches!(client.poll_event(), Some(Event::Accepted(_))));
//!
//! client.send(Message::text("hello")).unwrap();
//! client.ping("are you there".into()).unwrap();
//! pump(&mut client, &mut server, now);
//! assert_eq!(server.poll_event(), Some(Event::Message(Message::text("hello"))));
//! assert_eq!(server.poll_event(), Some(Event::Ping("are you there".into())));
//! pump(&mut server, &mut client, now); // the automatic pong
//! assert_eq!(client.poll_event(), Some(Event::Pong("are you there".into())));
//!
//! client.close(now, CloseCode::NORMAL, "bye").unwrap();
//! pump(&mut client, &mut server, now);
//! let closed = Event::Closed { code: CloseCode::NORMAL, reason: "bye".into(), clean: true };
//! assert_eq!(server.poll_event(), Some(closed));
//! pump(&mut server, &mut client, now); // the echoed close
//! assert!(matches!(client.poll_event(), Some(Event::Closed { clean: true, .. })));
//! assert!(client.is_closed() && server.is_closed());
//! ```
//!
//! # Modules
//!
//! [`frame`] (header codec, masking, close codes, prepared frames),
//! [`handshake`] (request and response parsing and writing), [`deflate`]
//! (extension negotiation and compression), [`utf8`]
//! (streaming validation) are usable on their own; [`Connection`] composes
//! them.
//!
//! `examples/blocking_echo.rs` drives [`Connection`] over blocking
//! `std::net` sockets, a server and a client with no async runtime.
//!
//! # Cargo feature `proptest`
//!
//! Off by default. It adds the public module `ws_proto::strategies`:
//! [proptest](https://docs.rs/proptest) strategies for messages,
//! fragmentations, chunkings, arbitrary frames and valid frame streams with
//! the events a receiver must report, the generators this crate's own
//! property tests use. Enable it in `[dev-dependencies]` to property-test a
//! frame codec or a stack built on this one:
//!
//! ```toml
//! [dev-dependencies]
//! ws-proto = { version = "0.1", features = ["proptest"] }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod connection;
pub mod deflate;
mod error;
mod event_queue;
pub mod frame;
pub mod handshake;
mod mask_keys;
mod message;
mod outbound;
#[cfg(feature = "proptest")]
pub mod strategies;
pub mod utf8;

pub use config::Config;
pub use connection::{ClientError, Connection, Role, State};
pub use deflate::{Compressor, DeflateConfig, DeflateMode, DeflateParams};
pub use error::{ConfigError, Error, HandshakeError, ProtocolError, SendError};
pub use frame::{CloseCode, PreparedBody, PreparedFrame};
pub use handshake::{AcceptOptions, ClientRequest, HttpResponse, Request, ServerResponse};
pub use mask_keys::{MaskKeySource, SeededMaskKeys};
pub use message::{Event, Message, Utf8Bytes};
