#!/usr/bin/env bash
# Instruction counts per message (or per handshake) of one server under
# callgrind: robust on a shared, busy machine where wall-clock and CPU-time
# ratios move with other people's load.
#
# Starts SERVER under `valgrind --tool=callgrind`, drives it with wsload
# (no warm-up, so every message is counted), stops it, then prints
# instructions per message and the top frames (self). Start-up and the
# handshakes are included: a few million instructions against the billions
# of the window (well under 1%).
#
# Usage: scripts/profile-depth1.sh SERVER WORKLOAD [OUTDIR]
#   SERVER:   tcp-echo fastwebsockets tungstenite ws-tokio ws-smol
#   WORKLOAD: 1x16 | 100x16 | 1x16-bin | 100x16-bin | connect
# Environment: CARGO_TARGET_DIR (release binaries), SECONDS_MEASURED (default 4),
#   MARGINAL=1: also profile a run of a quarter the length and report the
#   marginal count, (I_long - I_short) / (n_long - n_short), which cancels
#   start-up and handshakes (the figure to compare on a contended machine).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
SERVER=$1
WORKLOAD=$2
OUTDIR=${3:-$ROOT/reports/callgrind}
MEASURE=${SECONDS_MEASURED:-4}
mkdir -p "$OUTDIR"

# Picks a free port and sets addr and cmd (a fresh port for every run).
set_server() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    addr=127.0.0.1:$port
    case "$SERVER" in
        tcp-echo) cmd=("$BIN/tcp-echo" --listen "$addr"); raw=(--raw-tcp) ;;
        fastwebsockets) cmd=("$BIN/peer-fastwebsockets" --listen "$addr"); raw=() ;;
        tungstenite) cmd=("$BIN/peer-tungstenite" --listen "$addr"); raw=() ;;
        ws-tokio | ws-smol) cmd=("$BIN/$SERVER" echo --listen "$addr" --threads 1 --log warn); raw=() ;;
        *) echo "unknown server $SERVER" >&2; exit 2 ;;
    esac
}
set_server
case "$WORKLOAD" in
    1x16) load=(echo --connections 1 --size 16 --depth 1) ;;
    100x16) load=(echo --connections 100 --size 16 --depth 1) ;;
    1x16-bin) load=(echo --connections 1 --size 16 --depth 1 --binary) ;;
    100x16-bin) load=(echo --connections 100 --size 16 --depth 1 --binary) ;;
    connect) load=(connect --count 1000000 --concurrency 8); raw=() ;;
    *) echo "unknown workload $WORKLOAD" >&2; exit 2 ;;
esac
[[ $WORKLOAD == connect && $SERVER == tcp-echo ]] && { echo "no handshakes on tcp-echo" >&2; exit 2; }

# One profiled run of SECS seconds; writes $out, $json, and prints
# "instructions count" (messages or handshakes over the run).
profile_run() { # secs out json
    local secs=$1 out=$2 json=$3 vg
    set_server
    [[ $WORKLOAD == connect ]] && raw=()
    rm -f "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        "${cmd[@]}" >"${out%.callgrind}.log" 2>&1 &
    vg=$!
    trap 'kill $vg 2>/dev/null || true; wait $vg 2>/dev/null || true' EXIT
    for _ in $(seq 200); do
        ss -Hltn "sport = :$port" | grep -q . && break
        sleep 0.1
    done
    if [[ $WORKLOAD == connect ]]; then
        "$BIN/wsload" "${load[@]}" --duration "$secs" --url "ws://$addr/" >"$json" 2>/dev/null || true
    else
        "$BIN/wsload" "${load[@]}" "${raw[@]}" --warmup 0 --duration "$secs" --url "ws://$addr/" \
            >"$json" 2>/dev/null || true
    fi
    # SIGINT stops ours gracefully; the peers may need SIGTERM (callgrind still
    # writes its profile on a fatal signal).
    kill -INT "$vg" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$vg" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
    trap - EXIT
    python3 - "$out" "$json" "$WORKLOAD" <<'PY'
import json, sys
cg, js, wl = sys.argv[1], sys.argv[2], sys.argv[3]
ir = 0
for line in open(cg, errors="replace"):
    if line.startswith("summary:") or line.startswith("totals:"):
        ir = int(line.split()[1])
lines = [l for l in open(js) if l.strip().startswith("{")]
res = json.loads(lines[-1]) if lines else {}
print(ir, round(res.get("handshakes" if wl == "connect" else "msgs", 0)))
PY
}

out=$OUTDIR/$SERVER-$WORKLOAD.callgrind
read -r ir n < <(profile_run "$MEASURE" "$out" "$OUTDIR/$SERVER-$WORKLOAD.json")
unit=msg
[[ $WORKLOAD == connect ]] && unit=handshake
if [[ ${MARGINAL:-0} == 1 ]]; then
    # A second, shorter run: the difference between the two runs cancels
    # start-up, shutdown and (for echo workloads) the handshakes, which a
    # contended machine otherwise spreads over a varying message count.
    short=$(( MEASURE / 4 > 0 ? MEASURE / 4 : 1 ))
    read -r ir0 n0 < <(profile_run "$short" "$OUTDIR/$SERVER-$WORKLOAD.short.callgrind" \
        "$OUTDIR/$SERVER-$WORKLOAD.short.json")
    python3 -c "import json,sys; i,n,i0,n0=map(int,sys.argv[1:]); print(json.dumps({'instructions': i, '${unit}s': n, 'instructions_per_${unit}': round(i/n) if n else None, 'marginal_instructions_per_${unit}': round((i-i0)/(n-n0)) if n>n0 else None}))" "$ir" "$n" "$ir0" "$n0"
else
    python3 -c "import json,sys; i,n=map(int,sys.argv[1:]); print(json.dumps({'instructions': i, '${unit}s': n, 'instructions_per_${unit}': round(i/n) if n else None}))" "$ir" "$n"
fi
callgrind_annotate --inclusive=yes "$out" 2>/dev/null | sed -n '1,40p' | grep -E '^\s*[0-9,]+ ' | head -25 > "$out.inclusive.txt" || true
callgrind_annotate "$out" 2>/dev/null | grep -E '^\s*[0-9,]+ ' | head -25 > "$out.self.txt" || true
echo "self (top 25):"; cat "$out.self.txt"
