#!/usr/bin/env bash
# Hub server figures: fan-out to one room of 1,000 and 10,000 subscribers
# with one publisher (deliveries/s, p50/p99 latency, server CPU per
# delivery, deliveries lost), and resident memory per idle hub connection
# at 10,000 connections, for `ws-tokio serve` and `ws-smol serve`;
# fastwebsockets' broadcast server is measured beside them as a reference.
# Server pinned to core 0, load tool to core 1, single-threaded server.
#
#   scripts/hub-bench.sh [--no-build]
#
# Environment (defaults in brackets):
#   ROUNDS [3]     rounds; in each, every case runs once on every server
#                  (interleaved, so drifting background load hits all alike)
#   DURATION [5]   measured seconds per run (after 1 s of warm-up)
#   DRAIN [2]      seconds the load tool keeps reading after the last publish
#   CASES          "subs:rate ..." ["1000:50 1000:200 1000:1000 10000:20 10000:100"]
#   SERVERS        [ws-tokio ws-smol fastwebsockets]; an entry `name=path`
#                  runs the hub server binary at `path` under `name`
#   HOLD [1]       0 skips the idle-memory table
#
# Each fan-out row gives medians over the rounds, with the spread
# (min-max) of deliveries/s and p99, and for server and load tool the
# fraction of a core each was busy and the fraction it spent runnable but
# waiting for a CPU (run-queue wait, from /proc/PID/task/*/schedstat). A
# side near busy 1.00 is saturated; a side with a large wait was starved
# by other processes, and its figures say little about the code. "lost"
# counts deliveries that had not arrived DRAIN seconds after the last
# publish; "late" ones are part of it when the server fell behind.
#
# Prints markdown tables; raw JSON lines go to reports/hub-bench-*.jsonl.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
DRAIN=${DRAIN:-2}
CASES=${CASES:-"1000:50 1000:200 1000:1000 10000:20 10000:100"}
SERVERS=${SERVERS:-"ws-tokio ws-smol fastwebsockets"}
HOLD=${HOLD:-1}
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

# `name` or `name=path` -> name, binary path, kind (hub or fastwebsockets)
server_name() { echo "${1%%=*}"; }
server_bin() {
    if [[ $1 == *=* ]]; then echo "${1#*=}"
    elif [[ $1 == fastwebsockets ]]; then echo "$BIN/peer-fastwebsockets"
    else echo "$BIN/$1"; fi
}

start() { # entry port -> SRV_PID
    local hub_flags="--threads 1 --log warn --rate-per-sec 1000000 --rate-burst 1000000 --max-connections-per-ip 0"
    local bin; bin=$(server_bin "$1")
    if [[ $(server_name "$1") == fastwebsockets ]]; then
        taskset -c 0 "$bin" --listen "127.0.0.1:$2" --broadcast >/dev/null &
    else
        # shellcheck disable=SC2086
        taskset -c 0 "$bin" serve --listen "127.0.0.1:$2" $hub_flags &
    fi
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

fanout() { # entry subscribers rate round
    local port; port=$(free_port)
    start "$1" "$port"
    local args=(--url "ws://127.0.0.1:$port/ws" --subscribers "$2" --rate "$3"
                --duration "$DURATION" --drain "$DRAIN" --server-pid "$SRV_PID")
    if [[ $(server_name "$1") != fastwebsockets ]]; then
        args+=(--subscribe-msg '{"type":"join","room":"bench"}'
               --publisher-init '{"type":"join","room":"bench"}'
               --publish-msg '{"type":"publish","room":"bench","id":"p{seq}","data":{"ts":{ts}}}')
    fi
    local out
    out=$(taskset -c 1 "$BIN/wsload" fanout "${args[@]}" 2>&1 | tail -1)
    stop
    echo "{\"server\":\"$(server_name "$1")\",\"subscribers\":$2,\"rate\":$3,\"round\":$4,\"result\":$out}" >>"$RAW"
}

hold() { # entry
    local port; port=$(free_port)
    start "$1" "$port"
    local out
    out=$(taskset -c 1 "$BIN/wsload" connect --url "ws://127.0.0.1:$port/ws" --hold 10000 --server-pid "$SRV_PID" 2>&1 | tail -1)
    stop
    echo "{\"server\":\"$(server_name "$1")\",\"hold\":10000,\"result\":$out}" >>"$RAW"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq "$ROUNDS"); do
    for case in $CASES; do
        for s in $SERVERS; do
            echo "round $round: $(server_name "$s") ${case%:*} subs @ ${case#*:}/s" >&2
            fanout "$s" "${case%:*}" "${case#*:}" "$round"
        done
    done
done
if [[ $HOLD != 0 ]]; then
    for s in $SERVERS; do hold "$s"; done
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$RAW" "$ROUNDS" <<'PY'
import json, statistics, sys
raw, rounds = sys.argv[1], int(sys.argv[2])
rows, holds, order = {}, [], []
for line in open(raw):
    d = json.loads(line)
    if "hold" in d:
        holds.append(d)
        continue
    key = (d["subscribers"], d["rate"], d["server"])
    if key not in rows:
        rows[key] = []
        order.append(key)
    rows[key].append(d["result"])

def med(rs, k, f=lambda v: v):
    xs = [f(r[k]) for r in rs if isinstance(r.get(k), (int, float))]
    return statistics.median(xs) if xs else None

def lost(r):
    exp = r.get("expected_total") or 0
    return max(0, exp - (r.get("delivered_total", 0) - r.get("unparsed", 0))) if exp else None

fmt = lambda v, spec: "-" if v is None else format(v, spec)
print(f"Medians of {rounds} interleaved rounds; spread is min-max over the rounds.")
print("busy = fraction of a core used; wait = fraction runnable but waiting for a CPU.")
print()
print("| room | rate | server | deliveries/s (spread) | p50 ms | p99 ms (spread) | lost (max) | server CPU us/delivery | server busy / wait | load busy / wait | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key in order:
    n, rate, s = key
    rs = rows[key]
    dps = [r.get("deliveries_per_s", 0) for r in rs]
    p99 = [r["p99_us"] / 1000 for r in rs if "p99_us" in r]
    ls = [lost(r) for r in rs if lost(r) is not None]
    print(
        f"| {n:,} | {rate:g}/s | {s} "
        f"| {statistics.median(dps):,.0f} ({min(dps):,.0f}-{max(dps):,.0f}) "
        f"| {fmt(med(rs, 'p50_us', lambda v: v / 1000), '.1f')} "
        f"| {fmt(statistics.median(p99) if p99 else None, '.1f')} ({fmt(min(p99) if p99 else None, '.0f')}-{fmt(max(p99) if p99 else None, '.0f')}) "
        f"| {fmt(statistics.median(ls) if ls else None, ',.0f')} ({fmt(max(ls) if ls else None, ',.0f')}) "
        f"| {fmt(med(rs, 'server_cpu_us_per_delivery'), '.2f')} "
        f"| {fmt(med(rs, 'server_cpu_util'), '.2f')} / {fmt(med(rs, 'server_runq_wait'), '.2f')} "
        f"| {fmt(med(rs, 'load_cpu_util'), '.2f')} / {fmt(med(rs, 'load_runq_wait'), '.2f')} "
        f"| {sum(r.get('errors', 0) for r in rs)} |"
    )
if holds:
    print()
    print("| server | idle connections | server RSS bytes per connection |")
    print("|---|---|---|")
    for d in holds:
        print(f"| {d['server']} | 10,000 | {d['result'].get('bytes_per_conn', '-')} |")
print()
print(f"raw results: {raw}")
PY

# Many publishers (issue 10, parsing off the serial path): MANY_PUBLISHERS
# publishers at MANY_RATE msg/s each into MANY_ROOMS rooms of
# MANY_SUBSCRIBERS/MANY_ROOMS subscribers (each publisher is a member of
# its room too), MANY_SIZE-byte messages. Beside deliveries/s and p99: the
# hub task's CPU time (thread CPU clock) per client message it handled, from /metrics
# (ws_hub_task_cpu_seconds_total over ws_messages_in_total, before and
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
    local cpu0 msgs0 out cpu1 msgs1
    cpu0=$(metric "$port" hub_task_cpu_seconds_total); msgs0=$(metric "$port" messages_in_total)
    out=$(taskset -c 1 "$BIN/wsload" fanout --url "ws://127.0.0.1:$port/ws" \
        --subscribers "$MANY_SUBSCRIBERS" --publishers "$MANY_PUBLISHERS" --rooms "$MANY_ROOMS" \
        --rate "$MANY_RATE" --size "$MANY_SIZE" --duration "$DURATION" --server-pid "$SRV_PID" \
        --subscribe-msg '{"type":"join","room":"r{room}"}' \
        --publisher-init '{"type":"join","room":"r{room}"}' \
        --publish-msg '{"type":"publish","room":"r{room}","id":"p{seq}","data":{"ts":{ts},"pad":"{pad}"}}' \
        2>&1 | tail -1)
    cpu1=$(metric "$port" hub_task_cpu_seconds_total); msgs1=$(metric "$port" messages_in_total)
    stop
    out=$(python3 - "$out" "$cpu0" "$cpu1" "$msgs0" "$msgs1" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
b0, b1, m0, m1 = map(float, sys.argv[2:])
d["hub_task_cpu_us_per_message"] = round((b1 - b0) * 1e6 / (m1 - m0), 3) if m1 > m0 else None
d["hub_messages"] = m1 - m0
print(json.dumps(d))
PY
)
    echo "{\"server\":\"$(server_name "$1")\",\"many_publishers\":$MANY_PUBLISHERS,\"result\":$out}" >>"$RAW"
    echo "$out"
}
MANY_PUBLISHERS=${MANY_PUBLISHERS:-100} MANY_RATE=${MANY_RATE:-100} MANY_ROOMS=${MANY_ROOMS:-100}
MANY_SUBSCRIBERS=${MANY_SUBSCRIBERS:-9900} MANY_SIZE=${MANY_SIZE:-0}
echo
echo "| server | publishers x rate | rooms x members | deliveries/s | p50 ms | p99 ms | server CPU us/delivery | hub task CPU us/message | lost |"
echo "|---|---|---|---|---|---|---|---|---|"
for s in $SERVERS; do
    [[ $(server_name "$s") == fastwebsockets ]] && continue
    r=$(many "$s")
    python3 - "$s" "$r" "$MANY_PUBLISHERS" "$MANY_RATE" "$MANY_ROOMS" "$MANY_SUBSCRIBERS" <<'PY'
import json, sys
s, r, p, rate, rooms, subs = sys.argv[1:]
d = json.loads(r)
exp = d.get("expected_total") or 0
lost = max(0, exp - d.get("delivered_total", 0)) if exp else "-"
ms = lambda k: f"{d[k]/1000:.1f}" if isinstance(d.get(k), (int, float)) else "-"
members = (int(subs) + int(p)) // int(rooms)
print(f"| {s.split('=')[0]} | {p} x {rate}/s | {rooms} x {members} | {d.get('deliveries_per_s', 0):,.0f} | {ms('p50_us')} | {ms('p99_us')} | {d.get('server_cpu_us_per_delivery', '-')} | {d.get('hub_task_cpu_us_per_message', '-')} | {lost} |")
PY
done
