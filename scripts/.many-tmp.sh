#!/usr/bin/env bash
# Hub server figures: fan-out to one room of 1,000 and 10,000 subscribers
# with one publisher (deliveries/s, p99 latency, server CPU per delivery),
# and resident memory per idle hub connection at 10,000 connections, for
# `ws-tokio serve` and `ws-smol serve`; fastwebsockets' broadcast server is
# measured beside them as a reference. Server pinned to core 0, load tool
# to core 1, single-threaded server.
#
#   scripts/hub-bench.sh [--no-build]
#
# Prints one markdown table; raw JSON lines go to reports/hub-bench-*.jsonl.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
DURATION=${DURATION:-5}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p reports
RAW=reports/hub-bench-$STAMP.jsonl
: >"$RAW"

if [[ ${1:-} != --no-build ]]; then
    cargo build --release -p ws-benches -p runtime-tokio -p runtime-smol --bins >&2
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

start() { # name port -> SRV_PID
    local hub_flags="--threads 1 --log warn --rate-per-sec 1000000 --rate-burst 1000000 --max-connections-per-ip 0"
    case $1 in
        ws-tokio) taskset -c 0 "$BIN/ws-tokio" serve --listen "127.0.0.1:$2" $hub_flags & ;;
        ws-smol) taskset -c 0 "$BIN/ws-smol" serve --listen "127.0.0.1:$2" $hub_flags & ;;
        fastwebsockets) taskset -c 0 "$BIN/peer-fastwebsockets" --listen "127.0.0.1:$2" --broadcast >/dev/null & ;;
    esac
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    for _ in $(seq 100); do
        ss -Hltn "sport = :$2" | grep -q . && return 0
        sleep 0.05
    done
    echo "$1 did not start" >&2
    return 1
}

stop() { kill -TERM "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; }

fanout() { # name subscribers rate
    local port; port=$(free_port)
    start "$1" "$port"
    local args=(--url "ws://127.0.0.1:$port/ws" --subscribers "$2" --rate "$3" --duration "$DURATION" --server-pid "$SRV_PID")
    if [[ $1 == ws-* ]]; then
        args+=(--subscribe-msg '{"type":"join","room":"bench"}'
               --publisher-init '{"type":"join","room":"bench"}'
               --publish-msg '{"type":"publish","room":"bench","id":"p{seq}","data":{"ts":{ts}}}')
    fi
    local out
    out=$(taskset -c 1 "$BIN/wsload" fanout "${args[@]}" 2>&1 | tail -1)
    stop
    echo "{\"server\":\"$1\",\"subscribers\":$2,\"rate\":$3,\"result\":$out}" >>"$RAW"
    echo "$out"
}

hold() { # name
    local port; port=$(free_port)
    start "$1" "$port"
    local out
    out=$(taskset -c 1 "$BIN/wsload" connect --url "ws://127.0.0.1:$port/ws" --hold 10000 --server-pid "$SRV_PID" 2>&1 | tail -1)
    stop
    echo "{\"server\":\"$1\",\"hold\":10000,\"result\":$out}" >>"$RAW"
    echo "$out"
}

field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(d.get('$2','-'))" "$1"; }

# Many publishers (issue 10, parsing off the serial path): MANY_PUBLISHERS
# publishers at MANY_RATE msg/s each into MANY_ROOMS rooms of
# MANY_SUBSCRIBERS/MANY_ROOMS subscribers (each publisher is a member of
# its room too), MANY_SIZE-byte messages. Beside deliveries/s and p99: the
# hub task's busy time per client message it handled, from /metrics
# (ws_hub_task_busy_seconds_total over ws_messages_in_total, before and
# after the run): the cost of the server's one serial point.
metric() { # port name
    python3 - "$1" "$2" <<'PY'
import sys, urllib.request
port, name = sys.argv[1:]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read().decode()
print(next((l.split()[1] for l in text.splitlines() if l.startswith(f"ws_{name} ")), "nan"))
PY
}
many() { # name
    local port; port=$(free_port)
    start "$1" "$port"
    local busy0 msgs0 out busy1 msgs1
    busy0=$(metric "$port" hub_task_busy_seconds_total); msgs0=$(metric "$port" messages_in_total)
    out=$(taskset -c 1 "$BIN/wsload" fanout --url "ws://127.0.0.1:$port/ws" \
        --subscribers "$MANY_SUBSCRIBERS" --publishers "$MANY_PUBLISHERS" --rooms "$MANY_ROOMS" \
        --rate "$MANY_RATE" --size "$MANY_SIZE" --duration "$DURATION" --server-pid "$SRV_PID" \
        --subscribe-msg '{"type":"join","room":"r{room}"}' \
        --publisher-init '{"type":"join","room":"r{room}"}' \
        --publish-msg '{"type":"publish","room":"r{room}","id":"p{seq}","data":{"ts":{ts},"pad":"{pad}"}}' \
        2>&1 | tail -1)
    busy1=$(metric "$port" hub_task_busy_seconds_total); msgs1=$(metric "$port" messages_in_total)
    stop
    out=$(python3 - "$out" "$busy0" "$busy1" "$msgs0" "$msgs1" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
b0, b1, m0, m1 = map(float, sys.argv[2:])
d["hub_task_busy_us_per_message"] = round((b1 - b0) * 1e6 / (m1 - m0), 3) if m1 > m0 else None
d["hub_messages"] = m1 - m0
print(json.dumps(d))
PY
)
    echo "{\"server\":\"$1\",\"many_publishers\":$MANY_PUBLISHERS,\"result\":$out}" >>"$RAW"
    echo "$out"
}
MANY_PUBLISHERS=${MANY_PUBLISHERS:-100} MANY_RATE=${MANY_RATE:-100} MANY_ROOMS=${MANY_ROOMS:-100}
MANY_SUBSCRIBERS=${MANY_SUBSCRIBERS:-9900} MANY_SIZE=${MANY_SIZE:-0}
echo
echo "| server | publishers x rate | rooms x members | deliveries/s | p50 ms | p99 ms | server CPU us/delivery | hub task busy us/message | lost |"
echo "|---|---|---|---|---|---|---|---|---|"
for s in ws-tokio ws-smol; do
    r=$(many "$s")
    python3 - "$s" "$r" "$MANY_PUBLISHERS" "$MANY_RATE" "$MANY_ROOMS" "$MANY_SUBSCRIBERS" <<'PY'
import json, sys
s, r, p, rate, rooms, subs = sys.argv[1:]
d = json.loads(r)
exp = d.get("expected_total") or 0
lost = max(0, exp - d.get("delivered_total", 0)) if exp else "-"
ms = lambda k: f"{d[k]/1000:.1f}" if isinstance(d.get(k), (int, float)) else "-"
members = (int(subs) + int(p)) // int(rooms)
print(f"| {s} | {p} x {rate}/s | {rooms} x {members} | {d.get('deliveries_per_s', 0):,.0f} | {ms('p50_us')} | {ms('p99_us')} | {d.get('server_cpu_us_per_delivery', '-')} | {d.get('hub_task_busy_us_per_message', '-')} | {lost} |")
PY
done
echo
echo "raw results: $RAW"
