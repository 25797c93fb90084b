//! A request/response connection to Redis on any [`Runtime`], for commands
//! outside pub/sub (for example HSET, EXPIRE and HGETALL for state that
//! nodes share).

use ws_async::Runtime;

use super::conn::{Conn, ConnError, limit};
use super::resp::Value;
use super::url::RedisUrl;
use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};

/// One connection, one request at a time, each answered within
/// [`RESPONSE_TIMEOUT`].
///
/// An error reply from Redis is [`ConnError::Server`] and leaves the
/// connection usable; after any other error the connection is in an
/// unknown state (a late reply may still arrive): drop the client and
/// connect again.
pub struct RedisClient<R: Runtime> {
    rt: R,
    conn: Conn<R::Stream>,
}

impl<R: Runtime> RedisClient<R> {
    /// Connects (with AUTH if the URL has a password, then PING) within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(rt: R, url: &RedisUrl) -> Result<Self, ConnError> {
        let conn = limit(&rt, CONNECT_TIMEOUT, Conn::open(&rt, url)).await?;
        Ok(Self { rt, conn })
    }

    /// Sends one command (its arguments as bulk strings) and returns the
    /// reply; an error reply is an `Err`.
    pub async fn command<I, A>(&mut self, args: I) -> Result<Value, ConnError>
    where
        I: IntoIterator<Item = A>,
        I::IntoIter: ExactSizeIterator,
        A: AsRef<[u8]>,
    {
        self.conn.queue(args);
        let conn = &mut self.conn;
        let reply = limit(&self.rt, RESPONSE_TIMEOUT, async {
            conn.flush().await?;
            conn.read().await
        })
        .await?;
        match reply {
            Value::Error(_) => Err(ConnError::unexpected(reply)),
            reply => Ok(reply),
        }
    }
}
