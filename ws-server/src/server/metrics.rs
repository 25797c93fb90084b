//! `/metrics` in the Prometheus text format: the hub's counters plus the
//! server's own (handshakes, refusals).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ws_hub::Metrics;

/// Counters kept by the server outside the hub.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Upgrades that completed.
    pub handshakes: AtomicU64,
    /// Handshakes that failed (bad request, timeout, I/O error).
    pub handshake_failures: AtomicU64,
    /// Requests refused for a bad or missing token.
    pub auth_failures: AtomicU64,
    /// Requests refused for their Origin.
    pub origin_refusals: AtomicU64,
    /// Connections refused by the per-IP limit.
    pub ip_limit_refusals: AtomicU64,
    /// TLS handshakes completed (TLS port only).
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes that failed: plain HTTP or garbage on the TLS port,
    /// a missing or untrusted client certificate, a timeout.
    pub tls_handshake_failures: AtomicU64,
    /// Plain HTTP requests answered (health, metrics, not found).
    pub http_requests: AtomicU64,
    /// Messages received from clients.
    pub frames_in: AtomicU64,
    /// Bytes received in client messages.
    pub bytes_in: AtomicU64,
    /// CPU time the hub task spent handling inputs and handing out
    /// actions, in nanoseconds: the load on the server's one serial point
    /// (shared with the hub task; read from the thread CPU clock).
    pub hub_cpu_ns: Arc<AtomicU64>,
}

impl ServerCounters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// CPU time the calling thread has used: what a task costs between two
/// readings with no `.await` between them, whatever else runs on the
/// machine. Wall-clock time since the first call where the platform has no
/// thread CPU clock.
pub(crate) fn thread_cpu_time() -> std::time::Duration {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        std::time::Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }
    #[cfg(not(unix))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed()
    }
}

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP ws_{name} {help}\n# TYPE ws_{name} {kind}\nws_{name} {value}"
    );
}

/// Renders hub metrics and server counters.
pub fn render(hub: &Metrics, server: &ServerCounters, out: &mut String) {
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    line(
        out,
        "connections",
        "gauge",
        "Open hub connections.",
        hub.connections,
    );
    line(
        out,
        "sessions",
        "gauge",
        "Sessions, connected or resumable.",
        hub.sessions,
    );
    line(
        out,
        "detached_sessions",
        "gauge",
        "Sessions waiting to be resumed.",
        hub.detached_sessions,
    );
    line(
        out,
        "rooms",
        "gauge",
        "Rooms with at least one member.",
        hub.rooms,
    );
    line(
        out,
        "token_expiry_closes_total",
        "counter",
        "Connections closed with 4001 because their token expired.",
        hub.token_expiry_closes,
    );
    line(
        out,
        "users",
        "gauge",
        "Online users: users with at least one session, connected or resumable.",
        hub.users,
    );
    line(
        out,
        "dedup_entries",
        "gauge",
        "Message ids in de-duplication windows.",
        hub.dedup_entries,
    );
    line(
        out,
        "connections_total",
        "counter",
        "Connections accepted by the hub.",
        hub.connections_total,
    );
    line(
        out,
        "messages_in_total",
        "counter",
        "Client messages handled.",
        hub.messages_in,
    );
    line(
        out,
        "messages_out_total",
        "counter",
        "Messages delivered to connections.",
        hub.messages_out,
    );
    line(
        out,
        "bytes_out_total",
        "counter",
        "Bytes delivered to connections.",
        hub.bytes_out,
    );
    line(
        out,
        "bytes_in_total",
        "counter",
        "Bytes received in client messages.",
        c(&server.bytes_in),
    );
    line(
        out,
        "hub_task_cpu_seconds_total",
        "counter",
        "CPU time the hub task used: its utilisation is the rate.",
        c(&server.hub_cpu_ns) as f64 / 1e9,
    );
    line(
        out,
        "publishes_total",
        "counter",
        "Publishes accepted.",
        hub.publishes,
    );
    line(
        out,
        "duplicates_suppressed_total",
        "counter",
        "Repeated message ids not delivered again.",
        hub.duplicates_suppressed,
    );
    line(
        out,
        "retransmissions_total",
        "counter",
        "Messages retransmitted for missing delivery acks.",
        hub.retransmissions,
    );
    line(
        out,
        "slow_consumer_disconnects_total",
        "counter",
        "Connections closed as slow consumers.",
        hub.slow_consumer_disconnects,
    );
    line(
        out,
        "heartbeat_timeouts_total",
        "counter",
        "Connections closed for missing pongs.",
        hub.heartbeat_timeouts,
    );
    line(
        out,
        "idle_evictions_total",
        "counter",
        "Connections evicted as idle.",
        hub.idle_evictions,
    );
    line(
        out,
        "ack_timeouts_total",
        "counter",
        "Connections closed for unacknowledged deliveries.",
        hub.ack_timeouts,
    );
    line(
        out,
        "abuse_closes_total",
        "counter",
        "Connections closed for repeated protocol abuse.",
        hub.abuse_closes,
    );
    line(
        out,
        "refused_total",
        "counter",
        "Connections refused by the hub (full, shutting down).",
        hub.refused,
    );
    line(
        out,
        "resumes_total",
        "counter",
        "Sessions resumed.",
        hub.resumes_ok,
    );
    line(
        out,
        "resume_failures_total",
        "counter",
        "Resume requests that failed.",
        hub.resumes_failed,
    );
    line(
        out,
        "hub_protocol_errors_total",
        "counter",
        "Malformed hub messages.",
        hub.protocol_errors,
    );
    line(
        out,
        "nacks_total",
        "counter",
        "Negative acknowledgements sent.",
        hub.nacks.total(),
    );
    line(
        out,
        "bus_out_total",
        "counter",
        "Messages published to the cluster bus.",
        hub.bus_out,
    );
    line(
        out,
        "bus_in_total",
        "counter",
        "Messages received from the cluster bus.",
        hub.bus_in,
    );
    line(
        out,
        "handshakes_total",
        "counter",
        "WebSocket upgrades completed.",
        c(&server.handshakes),
    );
    line(
        out,
        "handshake_failures_total",
        "counter",
        "Failed handshakes.",
        c(&server.handshake_failures),
    );
    line(
        out,
        "auth_failures_total",
        "counter",
        "Requests refused for their token.",
        c(&server.auth_failures),
    );
    line(
        out,
        "origin_refusals_total",
        "counter",
        "Requests refused for their Origin.",
        c(&server.origin_refusals),
    );
    line(
        out,
        "ip_limit_refusals_total",
        "counter",
        "Connections refused by the per-IP limit.",
        c(&server.ip_limit_refusals),
    );
    line(
        out,
        "tls_handshakes_total",
        "counter",
        "TLS handshakes completed.",
        c(&server.tls_handshakes),
    );
    line(
        out,
        "tls_handshake_failures_total",
        "counter",
        "TLS handshakes failed (not TLS, refused client certificate, timeout).",
        c(&server.tls_handshake_failures),
    );
    line(
        out,
        "http_requests_total",
        "counter",
        "Plain HTTP requests answered.",
        c(&server.http_requests),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut hub = Metrics::default();
        hub.connections = 3;
        hub.duplicates_suppressed = 2;
        let server = ServerCounters::default();
        ServerCounters::bump(&server.handshakes);
        let mut out = String::new();
        render(&hub, &server, &mut out);
        assert!(out.contains("# TYPE ws_connections gauge\nws_connections 3\n"));
        assert!(out.contains("ws_duplicates_suppressed_total 2\n"));
        assert!(out.contains("ws_handshakes_total 1\n"));
        for l in out.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.split_once(' ').unwrap();
            assert!(
                name.starts_with("ws_") && value.parse::<u64>().is_ok(),
                "{l}"
            );
        }
    }
}
