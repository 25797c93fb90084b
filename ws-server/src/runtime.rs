//! What the server application needs of a runtime beyond `ws_async::Runtime`.

use ws_async::Runtime;

/// The async runtime the `redis` crate drives the bus's connections on.
///
/// The choice is made at build time: each adapter enables the matching
/// feature of this crate (`tokio-bus` turns on redis's `tokio-comp`,
/// `smol-bus` its `smol-comp`), so a binary built from one adapter links
/// only that runtime's redis support and redis has nothing to choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusRuntime {
    /// tokio (feature `tokio-bus`).
    Tokio,
    /// smol / async-io (feature `smol-bus`).
    Smol,
}

impl BusRuntime {
    /// Whether this crate was built with this runtime's Redis support.
    pub const fn is_built(self) -> bool {
        match self {
            Self::Tokio => cfg!(feature = "tokio-bus"),
            Self::Smol => cfg!(feature = "smol-bus"),
        }
    }

    /// The cargo feature of this crate that brings this runtime's Redis
    /// support in.
    pub const fn feature(self) -> &'static str {
        match self {
            Self::Tokio => "tokio-bus",
            Self::Smol => "smol-bus",
        }
    }
}

/// A [`Runtime`] the server application runs on.
pub trait ServerRuntime: Runtime {
    /// The runtime the Redis bus's connections run on; its feature
    /// ([`BusRuntime::feature`]) must be enabled, or the bus reports an
    /// error instead of connecting.
    const BUS: BusRuntime;
}
