#!/usr/bin/env bash
# Side-by-side comparison of WebSocket servers on loopback.
#
# For each round, each workload and each server (servers interleaved within a
# round), starts the server pinned to core 0 (`taskset -c 0`) on a free port,
# drives it with `wsload` pinned to core 1, kills it, and records the JSON
# result line. Prints ONE markdown table of medians over the rounds, each
# figure with its ratio to fastwebsockets and, with several rounds, the
# spread of the CPU figures [min-max]; every echo and handshake row also
# reports how busy the server and the load tool were (1.00 = a saturated
# core).
#
# The depth-1 workloads come first: one small message, then its answer, as
# chat and hub traffic does. There msgs/s is bounded by the round trip (and
# often by the load tool's own core), so the figure that ranks servers is
# the server's CPU time per message, read from /proc/PID/stat.
#
# Usage: scripts/compare.sh [--rounds N] [--duration S] [--servers "a b"]
#                           [--workloads "w1 w2"] [--no-build] [--out FILE]
#                           [--from-raw reports/compare-*.jsonl]  (re-render a table)
#   servers:   tcp-echo fastwebsockets tungstenite ws-tokio ws-smol
#   workloads: d1-1x16-text d1-1x16-bin d1-100x16-text d1-100x16-bin
#              echo-small (depth 8) echo-16k echo-1m connect hold
# Environment: CARGO_TARGET_DIR (binaries are taken from $CARGO_TARGET_DIR/release,
#   default ./target/release), SERVER_CPU / LOAD_CPU (cores, default 0 / 1),
#   SMALL_DEPTH (pipelining depth of echo-small, default 8), HOLD_CONNS (10000),
#   CONNECT_COUNT (10000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
ROUNDS=3
DURATION=5
WARMUP=1
BUILD=1
SERVERS="tcp-echo fastwebsockets tungstenite ws-tokio ws-smol"
WORKLOADS="d1-1x16-text d1-1x16-bin d1-100x16-text d1-100x16-bin echo-small echo-16k echo-1m connect hold"
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SMALL_DEPTH=${SMALL_DEPTH:-8}
HOLD_CONNS=${HOLD_CONNS:-10000}
CONNECT_COUNT=${CONNECT_COUNT:-10000}
OUT=""
FROM_RAW=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        --workloads) WORKLOADS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        --from-raw) FROM_RAW=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$ROOT/reports"
RAW=$ROOT/reports/compare-$STAMP.jsonl
LOG=$ROOT/reports/compare-$STAMP.log
OUT=${OUT:-$ROOT/reports/compare-$STAMP.md}
: > "$LOG"

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

run_all() {
: > "$RAW"

# ---------------------------------------------------------------- build
if [[ $BUILD == 1 ]]; then
    log "building ws-benches (release) into $TARGET_DIR"
    cargo build --release -p ws-benches --bins >>"$LOG" 2>&1 || {
        log "cargo build -p ws-benches failed (see $LOG)"; exit 1; }
    for pkg in runtime-tokio runtime-smol; do
        if [[ -f $ROOT/$pkg/Cargo.toml ]]; then
            log "building $pkg (release)"
            cargo build --release -p "$pkg" --bins >>"$LOG" 2>&1 ||
                log "warning: building $pkg failed; its server will be skipped if no binary exists"
        fi
    done
fi
[[ -x $BIN/wsload ]] || { echo "no $BIN/wsload; build first" >&2; exit 1; }
WSLOAD=$BIN/wsload

# ---------------------------------------------------------------- servers
# server name -> command line (ADDR is substituted)
server_cmd() {
    case "$1" in
        tcp-echo) echo "$BIN/tcp-echo --listen ADDR" ;;
        fastwebsockets) echo "$BIN/peer-fastwebsockets --listen ADDR" ;;
        tungstenite) echo "$BIN/peer-tungstenite --listen ADDR" ;;
        ws-tokio) echo "$BIN/ws-tokio echo --listen ADDR --threads 1 --log warn" ;;
        ws-smol) echo "$BIN/ws-smol echo --listen ADDR --threads 1 --log warn" ;;
        *) return 1 ;;
    esac
}

for s in $SERVERS; do
    cmd=$(server_cmd "$s") || { log "unknown server $s"; exit 2; }
    exe=${cmd%% *}
    if [[ -x $exe ]]; then
        ACTIVE+=("$s")
    else
        log "skipping $s: $exe not found"
    fi
done
[[ ${#ACTIVE[@]} -gt 0 ]] || { log "no servers to run"; exit 1; }

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT INT TERM

# Busy fraction (0-100) of the two benchmark cores over 0.5 s, excluding us.
cores_busy() {
    local a b
    a=$(grep -E "^cpu($SERVER_CPU|$LOAD_CPU) " /proc/stat)
    sleep 0.5
    b=$(grep -E "^cpu($SERVER_CPU|$LOAD_CPU) " /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '
        { idle = $5 + $6; tot = 0; for (i = 2; i <= NF; i++) tot += $i
          if (NR <= 2) { i0[NR] = idle; t0[NR] = tot } else { k = NR - 2
            di = idle - i0[k]; dt = tot - t0[k]; b = dt > 0 ? 100 * (1 - di / dt) : 0
            if (b > max) max = b } }
        END { printf "%d\n", max }'
}

# Waits (up to QUIET_WAIT seconds per run, QUIET_BUDGET seconds in all) until
# neither benchmark core is more than QUIET_MAX percent busy with someone
# else's work. Sets QUIET=true/false; the table prefers quiet runs.
QUIET_MAX=${QUIET_MAX:-15}
QUIET_WAIT=${QUIET_WAIT:-20}
QUIET_BUDGET=${QUIET_BUDGET:-240}
NOISY_RUNS=0
WAITED=0
wait_quiet() {
    local start now b
    start=$(date +%s)
    local deadline=$(( start + QUIET_WAIT ))
    (( WAITED >= QUIET_BUDGET )) && deadline=$start
    while :; do
        b=$(cores_busy)
        now=$(date +%s)
        if (( b <= QUIET_MAX )); then QUIET=true; WAITED=$(( WAITED + now - start )); return; fi
        if (( now >= deadline )); then
            WAITED=$(( WAITED + now - start ))
            QUIET=false; NOISY_RUNS=$((NOISY_RUNS + 1))
            log "warning: benchmark cores ${b}% busy with other work; measuring anyway"
            return
        fi
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

SRV_PID=""
start_server() { # name port
    local cmd
    cmd=$(server_cmd "$1")
    cmd=${cmd//ADDR/127.0.0.1:$2}
    # shellcheck disable=SC2086
    taskset -c "$SERVER_CPU" $cmd >>"$LOG" 2>&1 &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    for _ in $(seq 100); do
        if ss -Hltn "sport = :$2" | grep -q .; then return 0; fi
        if ! kill -0 "$SRV_PID" 2>/dev/null; then log "$1 exited at start"; return 1; fi
        sleep 0.05
    done
    log "$1 did not listen on port $2"
    return 1
}

stop_server() {
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    local keep=()
    for p in "${PIDS[@]}"; do [[ $p != "$SRV_PID" ]] && keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
    SRV_PID=""
}

# workload -> wsload arguments (URL and PID appended by the caller)
workload_args() { # workload server
    local raw=""
    [[ $2 == tcp-echo ]] && raw="--raw-tcp"
    case "$1" in
        d1-1x16-text) echo "echo --connections 1 --size 16 --depth 1 --duration $DURATION --warmup $WARMUP $raw" ;;
        d1-1x16-bin) echo "echo --connections 1 --size 16 --depth 1 --duration $DURATION --warmup $WARMUP --binary $raw" ;;
        d1-100x16-text) echo "echo --connections 100 --size 16 --depth 1 --duration $DURATION --warmup $WARMUP $raw" ;;
        d1-100x16-bin) echo "echo --connections 100 --size 16 --depth 1 --duration $DURATION --warmup $WARMUP --binary $raw" ;;
        echo-small) echo "echo --connections 100 --size 20 --depth $SMALL_DEPTH --duration $DURATION --warmup $WARMUP $raw" ;;
        echo-16k) echo "echo --connections 500 --size 16384 --depth 1 --duration $DURATION --warmup $WARMUP --binary $raw" ;;
        echo-1m) echo "echo --connections 1 --size 1048576 --depth 1 --duration $DURATION --warmup $WARMUP --binary $raw" ;;
        connect) [[ -n $raw ]] && return 1; echo "connect --count $CONNECT_COUNT --concurrency 32 --duration 20" ;;
        hold) [[ -n $raw ]] && return 1; echo "connect --hold $HOLD_CONNS --concurrency 128 --settle 2" ;;
        *) return 1 ;;
    esac
}

log "servers: ${ACTIVE[*]}; workloads: $WORKLOADS; rounds: $ROUNDS; server core $SERVER_CPU, load core $LOAD_CPU"
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
T_START=$(date +%s)

for round in $(seq "$ROUNDS"); do
    for w in $WORKLOADS; do
        for s in "${ACTIVE[@]}"; do
            args=$(workload_args "$w" "$s") || continue
            wait_quiet
            port=$(free_port)
            if ! start_server "$s" "$port"; then stop_server; continue; fi
            # shellcheck disable=SC2086
            line=$(taskset -c "$LOAD_CPU" "$WSLOAD" $args --url "ws://127.0.0.1:$port/" \
                --server-pid "$SRV_PID" 2>>"$LOG" | tee -a "$LOG" | tail -n 1) || true
            stop_server
            if [[ $line == \{* ]]; then
                echo "{\"round\":$round,\"server\":\"$s\",\"workload\":\"$w\",\"quiet\":$QUIET,\"result\":$line}" >>"$RAW"
                log "round $round $w $s: $(echo "$line" | cut -c1-150)"
            else
                log "round $round $w $s: no result"
            fi
        done
    done
done
log "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); took $(( $(date +%s) - T_START )) s"

}

ACTIVE=()
if [[ -n $FROM_RAW ]]; then
    RAW=$FROM_RAW
    for s in $SERVERS; do
        grep -q "\"server\":\"$s\"" "$RAW" && ACTIVE+=("$s")
    done
else
    run_all
fi

# ---------------------------------------------------------------- table
python3 - "$RAW" "$SMALL_DEPTH" "$HOLD_CONNS" "${ACTIVE[@]}" >"$OUT" <<'PY'
import json, statistics, sys
raw, depth, hold, servers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rows = [json.loads(l) for l in open(raw) if l.strip()]
def runs_of(server, workload, key):
    """The runs with a figure for `key`: the quiet ones if there are any,
    else all; the flag says whether only noisy runs were available."""
    sel = [r for r in rows if r["server"] == server and r["workload"] == workload
           and isinstance(r["result"].get(key), (int, float))]
    quiet = [r for r in sel if r.get("quiet") is not False]
    return quiet or sel, bool(sel) and not quiet
def vals_of(server, workload, key):
    use, noisy_only = runs_of(server, workload, key)
    return [r["result"][key] for r in use], noisy_only
def med(server, workload, key):
    vals, noisy_only = vals_of(server, workload, key)
    return (statistics.median(vals), noisy_only) if vals else (None, False)
def spread(server, workload, key):
    vals, _ = vals_of(server, workload, key)
    return f" [{fmt(min(vals))}-{fmt(max(vals))}]" if len(vals) > 1 else ""
def round_ratios(server, workload, key):
    """server / fastwebsockets within each round (the servers of a round
    run back to back, so a machine that drifts between rounds, or flips
    between two speeds, moves both alike)."""
    def by_round(s):
        return {r["round"]: r["result"][key] for r in runs_of(s, workload, key)[0]}
    base, mine = by_round("fastwebsockets"), by_round(server)
    return [mine[k] / base[k] for k in mine if base.get(k)]
def fmt(v):
    if v is None: return "–"
    if abs(v) >= 100000: return f"{v/1000:.0f}k"
    if abs(v) >= 1000: return f"{v:,.0f}"
    if abs(v) >= 10: return f"{v:.1f}"
    return f"{v:.2f}"
D1 = [("msgs_per_s", "msgs/s"), ("server_cpu_us_per_msg", "server CPU us/msg"), ("p99_us", "p99 latency us")]
metrics = [
    ("d1-1x16-text", "depth 1: echo 1 conn x 16 B text", D1),
    ("d1-1x16-bin", "depth 1: echo 1 conn x 16 B binary", D1),
    ("d1-100x16-text", "depth 1: echo 100 conns x 16 B text", D1),
    ("d1-100x16-bin", "depth 1: echo 100 conns x 16 B binary", D1),
    ("echo-small", f"echo 100 conns x 20 B, depth {depth}", [("msgs_per_s", "msgs/s"), ("server_cpu_us_per_msg", "server CPU us/msg"), ("p99_us", "p99 latency us")]),
    ("echo-16k", "echo 500 conns x 16 KiB", [("msgs_per_s", "msgs/s"), ("server_cpu_us_per_msg", "server CPU us/msg"), ("p99_us", "p99 latency us")]),
    ("echo-1m", "echo 1 conn x 1 MiB", [("msgs_per_s", "msgs/s"), ("server_cpu_us_per_msg", "server CPU us/msg"), ("p99_us", "p99 latency us")]),
    ("connect", "handshakes (open, upgrade, close)", [("handshakes_per_s", "handshakes/s"), ("server_cpu_us_per_handshake", "server CPU us/handshake")]),
    ("hold", f"{hold} idle connections", [("bytes_per_conn", "server RSS bytes/conn")]),
]
n_rounds = len({r["round"] for r in rows})
print(f"Medians of {n_rounds} round(s); ratio = server / fastwebsockets "
      "(higher is better for msgs/s and handshakes/s, lower for CPU, latency and bytes); "
      "[min-max] = spread of the CPU figures over the rounds. "
      "'busy' = cores used by server / load tool during the window (1.00 = saturated); 'ratio per round' = median [min-max] over the rounds of each round's own ratio to fastwebsockets (robust when the machine's speed drifts between rounds); 'in the kernel' = the share of the server's CPU time spent in system calls and the kernel's TCP (/proc/PID/stat stime over utime + stime).\n")
print("| workload | metric | " + " | ".join(servers) + " |")
print("|---|---|" + "---|" * len(servers))
for wl, title, ms in metrics:
    if not any(r["workload"] == wl for r in rows): continue
    for key, label in ms:
        base, _ = med("fastwebsockets", wl, key)
        cells = []
        for s in servers:
            v, noisy_only = med(s, wl, key)
            if v is None: cells.append("–"); continue
            c = fmt(v) + ("*" if noisy_only else "")
            if base and s != "fastwebsockets": c += f" ({v/base:.2f}x)"
            if key.startswith("server_cpu"): c += spread(s, wl, key)
            cells.append(c)
        print(f"| {title} | {label} | " + " | ".join(cells) + " |")
        if key.startswith("server_cpu") and n_rounds > 1 and "fastwebsockets" in servers:
            cells = []
            for s in servers:
                rr = round_ratios(s, wl, key)
                cells.append("–" if s == "fastwebsockets" or not rr else
                             f"{statistics.median(rr):.2f}x [{min(rr):.2f}-{max(rr):.2f}]")
            print(f"| {title} | {label}, ratio per round | " + " | ".join(cells) + " |")
    if wl.startswith(("echo", "d1-")) or wl == "connect":
        cells = []
        for s in servers:
            a, _ = med(s, wl, "server_cpu_util"); b, _ = med(s, wl, "load_cpu_util")
            cells.append("–" if a is None else f"{a:.2f} / {b:.2f}")
        print(f"| {title} | busy server / load | " + " | ".join(cells) + " |")
        cells = []
        for s in servers:
            k, _ = med(s, wl, "server_kernel_share")
            cells.append("–" if k is None else f"{k:.2f}")
        if any(c != "–" for c in cells):
            print(f"| {title} | server CPU in the kernel | " + " | ".join(cells) + " |")
errs = {}
for r in rows:
    e = r["result"].get("errors", 0) or 0
    if e: errs[(r["server"], r["workload"])] = errs.get((r["server"], r["workload"]), 0) + e
noisy = sum(1 for r in rows if r.get("quiet") is False)
if noisy:
    print(f"\n{noisy} of {len(rows)} runs started while other work kept a benchmark core busy; "
          "medians use the quiet runs where a cell has any, and * marks cells with only busy-machine runs.")
if errs:
    print("\nErrors: " + ", ".join(f"{s}/{w}: {n}" for (s, w), n in sorted(errs.items())))
PY
log "raw results: $RAW; log: $LOG; table: $OUT"
cat "$OUT"
