//! One RESP connection to Redis over a [`Runtime`]'s TCP stream: queue
//! commands, write them out, read replies (and pushes) one value at a time.

use std::future::{Future, poll_fn};
use std::io;
use std::time::Duration;

use futures_lite::future;
use thiserror::Error;
use ws_async::{Runtime, Transport};

use super::resp::{Decoder, RespError, Value, encode_command};
use super::url::RedisUrl;

/// Spare room kept in the read buffer before each read.
const READ_RESERVE: usize = 16 * 1024;

/// Why a connection to Redis failed or was given up.
#[derive(Debug, Error)]
pub enum ConnError {
    /// A socket error (including a refused connection).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Redis sent something that is not valid RESP2, or that exceeds the
    /// decoder's limits.
    #[error("invalid reply: {0}")]
    Resp(#[from] RespError),
    /// Redis closed the connection.
    #[error("connection closed by Redis")]
    Closed,
    /// Redis answered with an error reply.
    #[error("Redis error: {0}")]
    Server(String),
    /// Redis answered with something this client did not ask for.
    #[error("unexpected reply from Redis: {0}")]
    Unexpected(String),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

impl ConnError {
    /// The error for a reply that is not the expected one.
    pub(super) fn unexpected(value: Value) -> Self {
        match value {
            Value::Error(e) => Self::Server(String::from_utf8_lossy(&e).into_owned()),
            other => Self::Unexpected(format!("{other:?}")),
        }
    }
}

/// A RESP connection: an outbound buffer of queued commands and an
/// incremental decoder of what comes back.
pub(super) struct Conn<S> {
    stream: S,
    out: Vec<u8>,
    decoder: Decoder,
}

impl<S: Transport> Conn<S> {
    /// Connects to `url` on `rt`, authenticates if the URL has a password,
    /// and checks the server answers PING.
    pub(super) async fn open<R: Runtime<Stream = S>>(
        rt: &R,
        url: &RedisUrl,
    ) -> Result<Self, ConnError> {
        let mut conn = Self {
            stream: rt.connect(&url.authority).await?,
            out: Vec::new(),
            decoder: Decoder::default(),
        };
        if let Some(password) = &url.password {
            match &url.user {
                Some(user) => conn.queue(["AUTH", user, password]),
                None => conn.queue(["AUTH", password]),
            }
        }
        conn.queue(["PING"]);
        conn.flush().await?;
        if url.password.is_some() {
            conn.expect_simple(b"OK").await?;
        }
        conn.expect_simple(b"PONG").await?;
        Ok(conn)
    }

    /// Queues one command (written by the next [`flush`](Self::flush)).
    pub(super) fn queue<I, A>(&mut self, args: I)
    where
        I: IntoIterator<Item = A>,
        I::IntoIter: ExactSizeIterator,
        A: AsRef<[u8]>,
    {
        encode_command(&mut self.out, args);
    }

    /// Writes every queued command. Not cancel-safe: a connection whose
    /// flush was cut short is to be dropped.
    pub(super) async fn flush(&mut self) -> Result<(), ConnError> {
        let mut at = 0;
        while at < self.out.len() {
            let n = poll_fn(|cx| self.stream.poll_write(cx, &self.out[at..])).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            at += n;
        }
        self.out.clear();
        Ok(())
    }

    /// The next value from Redis. Cancel-safe: bytes read stay buffered.
    pub(super) async fn read(&mut self) -> Result<Value, ConnError> {
        loop {
            if let Some(value) = self.decoder.next_value()? {
                return Ok(value);
            }
            let buf = self.decoder.buffer_mut();
            if buf.capacity() - buf.len() < READ_RESERVE / 4 {
                buf.reserve(READ_RESERVE);
            }
            let n = poll_fn(|cx| self.stream.poll_read_into(cx, buf)).await?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
        }
    }

    /// Reads one reply and checks it is the simple string `expected`.
    async fn expect_simple(&mut self, expected: &[u8]) -> Result<(), ConnError> {
        match self.read().await? {
            Value::Simple(s) if s == expected => Ok(()),
            other => Err(ConnError::unexpected(other)),
        }
    }
}

/// `fut` with a time limit on `rt`'s clock.
pub(super) async fn limit<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    fut: impl Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    let sleep = rt.sleep_until(rt.now() + limit);
    future::or(fut, async {
        sleep.await;
        Err(ConnError::TimedOut(limit))
    })
    .await
}
