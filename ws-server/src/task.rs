//! Small task helpers shared by the servers: cancel a future on shutdown,
//! survive accept errors.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use ws_async::Runtime;

/// Runs `future` unless `stop` completes first (then `None`). `stop` is
/// polled first, so a shutdown is noticed even under constant traffic.
pub async fn unless<T>(
    stop: Pin<&mut impl Future<Output = ()>>,
    future: impl Future<Output = T>,
) -> Option<T> {
    let mut stop = stop;
    let mut future = pin!(future);
    poll_fn(|cx| {
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        future.as_mut().poll(cx).map(Some)
    })
    .await
}

/// Logs an accept failure; backs off briefly when out of file descriptors
/// so the loop does not spin.
pub async fn accept_error<R: Runtime>(rt: &R, e: io::Error) {
    tracing::warn!(error = %e, "accept failed");
    if e.raw_os_error()
        .is_some_and(|code| code == 24 || code == 23)
    {
        rt.sleep_until(rt.now() + Duration::from_millis(50)).await;
    }
}
