//! Identifiers: connections, users, rooms.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Opaque handle for one client connection, chosen by the adapter.
///
/// The hub never interprets the number. An adapter MAY reuse a value after
/// it has sent [`Command::Disconnected`](crate::Command::Disconnected) for it
/// (or after the hub emitted [`Action::Close`](crate::Action::Close) for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string.
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                Self(s.into())
            }

            /// The string form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self::new(s)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id! {
    /// A user as established by the [`Authenticator`](crate::Authenticator).
    ///
    /// One user may have several connections (tabs, devices); a direct
    /// message to a user reaches all of them. Cloning is a refcount bump.
    UserId
}

string_id! {
    /// The name of a room. Cloning is a refcount bump.
    RoomName
}

/// Who is on the other end of a connection, as decided by an authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user: UserId,
    /// `true` for users that presented no credentials. An anonymous session
    /// may be resumed by any connection presenting its session id; a
    /// non-anonymous one only by a connection of the same user.
    pub anonymous: bool,
}

impl Identity {
    /// An authenticated (non-anonymous) user.
    pub fn user(user: impl Into<UserId>) -> Self {
        Self {
            user: user.into(),
            anonymous: false,
        }
    }

    /// An anonymous user with the given generated id.
    pub fn anonymous(user: impl Into<UserId>) -> Self {
        Self {
            user: user.into(),
            anonymous: true,
        }
    }
}
