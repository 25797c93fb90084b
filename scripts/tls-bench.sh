#!/usr/bin/env bash
# TLS (wss://) side by side: ws-tokio, ws-smol and tokio-tungstenite over
# tokio-rustls (peer-tungstenite --tls-cert), each pinned to core 0 with one
# worker thread, driven by `wssload` pinned to core 1. One certificate from
# `ws-tokio gen-cert` for all. Prints one JSON line per server and workload.
#
# Usage: scripts/tls-bench.sh [--no-build]
# Environment: CARGO_TARGET_DIR (default ./target), SERVER_CPU / LOAD_CPU
#   (default 0 / 1), HOLD_CONNS (10000), CONNECT_COUNT (3000), DURATION (5).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HOLD_CONNS=${HOLD_CONNS:-10000}
CONNECT_COUNT=${CONNECT_COUNT:-3000}
DURATION=${DURATION:-5}
if [[ ${1:-} != --no-build ]]; then
    cargo build --release -q -p runtime-tokio -p runtime-smol
    cargo build --release -q -p ws-benches --bin wssload --bin peer-tungstenite
fi
WORK=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN/ws-tokio" gen-cert --cert "$WORK/cert.pem" --key "$WORK/key.pem" >/dev/null
TLS=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # server port
    case $1 in
        ws-tokio) taskset -c "$SERVER_CPU" "$BIN/ws-tokio" --threads 1 --log warn echo --listen "127.0.0.1:$2" "${TLS[@]}" & ;;
        ws-smol) taskset -c "$SERVER_CPU" "$BIN/ws-smol" --threads 1 --log warn echo --listen "127.0.0.1:$2" "${TLS[@]}" & ;;
        tungstenite-rustls) taskset -c "$SERVER_CPU" "$BIN/peer-tungstenite" --listen "127.0.0.1:$2" "${TLS[@]}" 2>/dev/null & ;;
    esac
    PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "$1 did not start" >&2
    return 1
}

for workload in connect echo-small echo-1m hold; do
    for server in tungstenite-rustls ws-tokio ws-smol; do
        port=$(free_port)
        start "$server" "$port"
        common=(--url "wss://localhost:$port/" --ca-file "$WORK/cert.pem" --server-pid "$PID")
        case $workload in
            connect) args=(connect "${common[@]}" --count "$CONNECT_COUNT" --concurrency 16) ;;
            echo-small) args=(echo "${common[@]}" --conns 100 --messages 8 --size 20 --duration "$DURATION") ;;
            echo-1m) args=(echo "${common[@]}" --conns 1 --messages 1 --size 1048576 --duration "$DURATION") ;;
            hold) args=(hold "${common[@]}" --conns "$HOLD_CONNS") ;;
        esac
        line=$(taskset -c "$LOAD_CPU" "$BIN/wssload" "${args[@]}" | tail -n 1)
        echo "{\"server\":\"$server\",\"workload\":\"$workload\",\"result\":$line}"
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=
    done
done
