#!/usr/bin/env bash
# permessage-deflate figures (issue 11), side by side in one run:
#
#   echo    server CPU per message for an echo of typical JSON, without
#           deflate, with no context takeover (our `--deflate shared`) and
#           with server context takeover (our `--deflate dedicated`), for
#           ws-tokio and ws-smol against Node `ws` (perMessageDeflate) and
#           Python `websockets`, both as installed by scripts/install-deps.sh
#   fanout  the hub (`serve`): one publisher, 1,000 subscribers, publishes
#           of about 1 KiB of JSON, without deflate, shared (compressed once
#           per publish) and dedicated (compressed once per member)
#   hold    server RSS per idle connection at 10,000 connections, echo
#           server in each mode, right after the handshake and after one
#           1 KiB message each way
#
# Server pinned to core 0 (`--threads 1`), load tool (`wsload`) to core 1.
# Every case runs once per round on every server, rounds interleaved;
# tables give medians over the rounds and the spread (min-max).
#
#   scripts/deflate-bench.sh [--no-build]
#
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [3]  (measured seconds per echo/fanout run)
#   PARTS ["echo fanout hold"]  SIZES ["1024 16384"] (echo payload bytes)
#   ECHO_CONNS [50]  FANOUT_SUBS [1000]  FANOUT_RATE [100]  FANOUT_SIZE [1024]
#   HOLD_CONNS [10000]
#   PAUSE_FILE  touched while measuring and removed at exit (e.g.
#               /work/fuzz/pause.NAME, which stops background fuzzers)
#   WS_PEERS_HOME [~/.cache/ws-peers]  Node `ws` and Python `websockets`
#
# Raw JSON lines: reports/deflate-bench-*.jsonl; tables on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
[[ $BIN == /* ]] || BIN=$ROOT/$BIN
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
PARTS=${PARTS:-"echo fanout hold"}
SIZES=${SIZES:-"1024 16384"}
ECHO_CONNS=${ECHO_CONNS:-50}
FANOUT_SUBS=${FANOUT_SUBS:-1000}
FANOUT_RATE=${FANOUT_RATE:-100}
FANOUT_SIZE=${FANOUT_SIZE:-1024}
HOLD_CONNS=${HOLD_CONNS:-10000}
PEERS=${WS_PEERS_HOME:-$HOME/.cache/ws-peers}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p reports
RAW=reports/deflate-bench-$STAMP.jsonl
LOG=reports/deflate-bench-$STAMP.log
: >"$RAW"
: >"$LOG"

if [[ ${1:-} != --no-build ]]; then
    cargo build --release -p ws-benches -p runtime-tokio -p runtime-smol --bins >&2
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    [[ -z ${PAUSE_FILE:-} ]] || rm -f "$PAUSE_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
[[ -z ${PAUSE_FILE:-} ]] || touch "$PAUSE_FILE"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME: starts server NAME pinned to core 0; sets SRV_PID and PORT.
#   ws-tokio[-MODE] / ws-smol[-MODE]  `echo` with --deflate MODE (shared)
#   hub-tokio[-MODE] / hub-smol[-MODE]  `serve` with --deflate MODE
#   node / python  the interop peers' echo servers (tests/interop), library
#                  defaults: they take what the client offers
start() {
    local name=$1 mode=shared kind bin out
    [[ $name == *-off || $name == *-dedicated ]] && mode=${name##*-}
    case $name in
        ws-tokio* | ws-smol* | hub-tokio* | hub-smol*)
            bin=$BIN/ws-${name#*-}; bin=${bin%%-off}; bin=${bin%%-dedicated}
            kind=echo
            local extra=()
            if [[ $name == hub-* ]]; then
                kind=serve
                extra=(--rate-per-sec 1000000 --rate-burst 1000000 --max-connections-per-ip 0)
            fi
            PORT=$(free_port)
            taskset -c 0 "$bin" "$kind" --listen "127.0.0.1:$PORT" --threads 1 --log warn \
                --deflate "$mode" "${extra[@]}" >>"$LOG" 2>&1 &
            SRV_PID=$!
            ;;
        node | python)
            out=$(mktemp)
            if [[ $name == node ]]; then
                NODE_PATH=$PEERS/node_modules taskset -c 0 node tests/interop/peer.js server takeover >"$out" 2>>"$LOG" &
            else
                taskset -c 0 "$PEERS/venv/bin/python" tests/interop/peer.py server takeover >"$out" 2>>"$LOG" &
            fi
            SRV_PID=$!
            PORT=""
            for _ in $(seq 100); do
                PORT=$(head -n1 "$out")
                [[ -n $PORT ]] && break
                sleep 0.05
            done
            rm -f "$out"
            [[ -n $PORT ]] || { echo "$name did not print its port" >&2; return 1; }
            ;;
        *) echo "unknown server $name" >&2; return 1 ;;
    esac
    PIDS+=("$SRV_PID")
    for _ in $(seq 100); do
        ss -Hltn "sport = :$PORT" | grep -q . && return 0
        sleep 0.05
    done
    echo "$name did not listen" >&2
    return 1
}
stop() { kill -TERM "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; }

# record PART ROUND SERVER OFFER EXTRA_JSON -- wsload args...
record() {
    local part=$1 round=$2 server=$3 offer=$4 extra=$5 out
    shift 6
    out=$(taskset -c 1 "$BIN/wsload" "$@" --deflate "$offer" --server-pid "$SRV_PID" 2>>"$LOG" | tail -n1) || true
    [[ $out == \{* ]] || out='{"error":"no result"}'
    echo "{\"part\":\"$part\",\"round\":$round,\"server\":\"$server\",\"offer\":\"$offer\"$extra,\"result\":$out}" >>"$RAW"
    echo "$part round $round $server $offer$extra: ${out:0:160}" >&2
}

# Echo cases: server and the offer it gets.
ECHO_CASES="ws-tokio-off:off ws-smol-off:off node:off python:off
ws-tokio:no-context ws-smol:no-context node:no-context python:no-context
ws-tokio-dedicated:takeover ws-smol-dedicated:takeover node:takeover python:takeover"
FANOUT_CASES="hub-tokio-off:off hub-smol-off:off hub-tokio:no-context hub-smol:no-context
hub-tokio-dedicated:takeover hub-smol-dedicated:takeover"
HOLD_CASES="ws-tokio-off:off ws-smol-off:off ws-tokio:no-context ws-smol:no-context
ws-tokio-dedicated:takeover ws-smol-dedicated:takeover"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG" >&2
T0=$(date +%s)
for round in $(seq "$ROUNDS"); do
    for part in $PARTS; do
        case $part in
            echo)
                for size in $SIZES; do
                    for c in $ECHO_CASES; do
                        s=${c%%:*} o=${c#*:}
                        start "$s" || continue
                        record echo "$round" "$s" "$o" ",\"size\":$size" -- echo \
                            --url "ws://127.0.0.1:$PORT/" --connections "$ECHO_CONNS" --size "$size" \
                            --depth 1 --json --duration "$DURATION" --warmup 1
                        stop
                    done
                done
                ;;
            fanout)
                for c in $FANOUT_CASES; do
                    s=${c%%:*} o=${c#*:}
                    start "$s" || continue
                    record fanout "$round" "$s" "$o" "" -- fanout --url "ws://127.0.0.1:$PORT/ws" \
                        --subscribers "$FANOUT_SUBS" --rate "$FANOUT_RATE" --size "$FANOUT_SIZE" \
                        --duration "$DURATION" --drain 2 \
                        --subscribe-msg '{"type":"join","room":"bench"}' \
                        --publisher-init '{"type":"join","room":"bench"}' \
                        --publish-msg '{"type":"publish","room":"bench","id":"p{seq}","data":{"ts":{ts},"text":"{pad}"}}'
                    stop
                done
                ;;
            hold)
                for exchange in 0 1024; do
                    for c in $HOLD_CASES; do
                        s=${c%%:*} o=${c#*:}
                        start "$s" || continue
                        record hold "$round" "$s" "$o" ",\"exchange\":$exchange" -- connect \
                            --url "ws://127.0.0.1:$PORT/" --hold "$HOLD_CONNS" --concurrency 128 \
                            --settle 2 --exchange "$exchange"
                        stop
                    done
                done
                ;;
        esac
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); took $(($(date +%s) - T0)) s" | tee -a "$LOG" >&2

python3 - "$RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def groups(part, keyf):
    out = {}
    for r in rows:
        if r["part"] == part and "error" not in r["result"]:
            out.setdefault(keyf(r), []).append(r["result"])
    return out
def stat(rs, k, scale=1.0):
    xs = [r[k] * scale for r in rs if isinstance(r.get(k), (int, float))]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)
def cell(rs, k, fmt, scale=1.0, spread=True):
    m, lo, hi = stat(rs, k, scale)
    if m is None:
        return "-"
    s = format(m, fmt)
    return s + (f" ({format(lo, fmt)}-{format(hi, fmt)})" if spread and len(rs) > 1 else "")
n_rounds = len({r["round"] for r in rows})
print(f"Medians of {n_rounds} round(s), spread min-max. busy = fraction of a core (server / load tool).\n")

g = groups("echo", lambda r: (r["size"], r["server"], r["offer"]))
if g:
    print("| size | server | offer | msgs/s | server CPU us/msg (spread) | vs ws-tokio plain | p99 us | busy server / load | sent frame B | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (size, server, offer), rs in g.items():
        base = g.get((size, "ws-tokio-off", "off"))
        m, _, _ = stat(rs, "server_cpu_us_per_msg")
        b = stat(base, "server_cpu_us_per_msg")[0] if base else None
        ratio = f"{m / b:.2f}x" if m and b else "-"
        print(f"| {size} | {server} | {offer} | {cell(rs, 'msgs_per_s', ',.0f', spread=False)} "
              f"| {cell(rs, 'server_cpu_us_per_msg', '.2f')} | {ratio} | {cell(rs, 'p99_us', ',.0f', spread=False)} "
              f"| {cell(rs, 'server_cpu_util', '.2f', spread=False)} / {cell(rs, 'load_cpu_util', '.2f', spread=False)} "
              f"| {rs[0].get('sent_frame_bytes', '-')} | {sum(r.get('errors', 0) for r in rs)} |")
    print()

g = groups("fanout", lambda r: (r["server"], r["offer"]))
if g:
    print("| server | offer | deliveries/s (spread) | server CPU us/delivery (spread) | p50 ms | p99 ms | compressed | lost | busy server / load | wait server / load | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (server, offer), rs in g.items():
        lost = [max(0, r.get("expected_total", 0) - (r.get("delivered_total", 0) - r.get("unparsed", 0))) for r in rs]
        comp = sum(r.get("compressed_received", 0) for r in rs)
        tot = sum(r.get("delivered_total", 0) for r in rs)
        print(f"| {server} | {offer} | {cell(rs, 'deliveries_per_s', ',.0f')} | {cell(rs, 'server_cpu_us_per_delivery', '.2f')} "
              f"| {cell(rs, 'p50_us', '.1f', 1e-3, False)} | {cell(rs, 'p99_us', '.1f', 1e-3, False)} "
              f"| {comp / tot if tot else 0:.0%} | {statistics.median(lost):,.0f} "
              f"| {cell(rs, 'server_cpu_util', '.2f', spread=False)} / {cell(rs, 'load_cpu_util', '.2f', spread=False)} "
              f"| {cell(rs, 'server_runq_wait', '.2f', spread=False)} / {cell(rs, 'load_runq_wait', '.2f', spread=False)} "
              f"| {sum(r.get('errors', 0) for r in rs)} |")
    print()

g = groups("hold", lambda r: (r["exchange"], r["server"], r["offer"]))
if g:
    print("| server | offer | message exchanged | connections | server RSS bytes/conn (spread) | errors |")
    print("|---|---|---|---|---|---|")
    for (exchange, server, offer), rs in g.items():
        print(f"| {server} | {offer} | {exchange or 'none'} | {rs[0].get('connections', '-')} "
              f"| {cell(rs, 'bytes_per_conn', ',.0f')} | {sum(r.get('errors', 0) for r in rs)} |")
print(f"\nraw results: {sys.argv[1]}")
PY
