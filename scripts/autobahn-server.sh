#!/usr/bin/env bash
# Run the Autobahn|Testsuite against our echo server (server role).
#
#   scripts/autobahn-server.sh tokio|smol
#
# Builds `cargo build --release -p runtime-$RUNTIME`, starts
# `target/release/ws-$RUNTIME echo --listen 127.0.0.1:PORT` on a free loopback
# port, runs `wstest -m fuzzingclient` against it and summarises the report in
# reports/autobahn/server-$RUNTIME/. Exits non-zero on any FAILED case, on
# NON-STRICT (unless AUTOBAHN_ALLOW_NONSTRICT=1), on a missing/short report,
# or if the server died during the run.
#
# Environment:
#   AUTOBAHN_CASES          case patterns, space/comma separated (default "1.* .. 10.*"; "*" = all)
#   AUTOBAHN_EXCLUDE_CASES  excluded patterns (default "12.* 13.*"; set empty to exclude none)
#   AUTOBAHN_ALLOW_NONSTRICT=1  NON-STRICT cases do not fail the run
#   AUTOBAHN_TIMEOUT        seconds for the whole wstest run (default 600)
#   AUTOBAHN_SERVER_CMD     command template replacing our binary, `{port}` is
#                           substituted; skips the cargo build. One command
#                           (it is exec'd), e.g. "/tmp/peer server 127.0.0.1:{port}"
#   AUTOBAHN_AGENT          agent name in the report (default ws-$RUNTIME)
#   AUTOBAHN_OUTDIR         report directory (default reports/autobahn/server-$RUNTIME)
#   AUTOBAHN_HOME           wstest install cache (see scripts/install-autobahn.sh)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

usage() { echo "usage: $0 tokio|smol" >&2; exit 2; }
RUNTIME=${1:-}
if [[ -n ${AUTOBAHN_SERVER_CMD:-} ]]; then
    [[ $RUNTIME =~ ^[A-Za-z0-9._-]+$ ]] || usage
else
    [[ $RUNTIME == tokio || $RUNTIME == smol ]] || usage
fi

AGENT=${AUTOBAHN_AGENT:-ws-$RUNTIME}
OUTDIR=${AUTOBAHN_OUTDIR:-$REPO/reports/autobahn/server-$RUNTIME}
TIMEOUT=${AUTOBAHN_TIMEOUT:-600}
STARTUP_TIMEOUT=${AUTOBAHN_STARTUP_TIMEOUT:-30}
TEMPLATE=$REPO/tests/autobahn/fuzzingclient.json

log() { printf 'autobahn-server: %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0=$(now)

SERVER_PID=""
WSTEST_PID=""
stop_pid() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    stop_pid "$WSTEST_PID"
    stop_pid "$SERVER_PID"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- wstest --------------------------------------------------------------------
WSTEST=$("$SCRIPT_DIR/install-autobahn.sh" </dev/null)
WSPY=$(dirname "$WSTEST")/python
unset PYTHONHOME PYTHONPATH || true

# --- server binary ---------------------------------------------------------------
if [[ -z ${AUTOBAHN_SERVER_CMD:-} ]]; then
    log "cargo build --release -p runtime-$RUNTIME"
    (cd "$REPO" && cargo build --release -p "runtime-$RUNTIME")
    BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/ws-$RUNTIME
    [[ $BIN == /* ]] || BIN=$REPO/$BIN
    [[ -x $BIN ]] || { log "error: $BIN not built"; exit 1; }
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
SPEC=$OUTDIR/fuzzingclient.json
EXPECTED=$OUTDIR/expected-cases.txt

# Spec from the template: fill {outdir} {agent} {port}, apply case overrides.
python3 - "$TEMPLATE" "$SPEC" "$OUTDIR" "$AGENT" "$PORT" <<'EOF'
import json, os, re, sys
tmpl, out, outdir, agent, port = sys.argv[1:]
subst = {"{outdir}": outdir, "{agent}": agent, "{port}": port}
def fill(v):
    if isinstance(v, str):
        for k, r in subst.items():
            v = v.replace(k, r)
        return v
    if isinstance(v, list):
        return [fill(x) for x in v]
    if isinstance(v, dict):
        return {k: fill(x) for k, x in v.items()}
    return v
spec = fill(json.load(open(tmpl)))
split = lambda s: [p for p in re.split(r"[,\s]+", s) if p]
if os.environ.get("AUTOBAHN_CASES"):
    spec["cases"] = split(os.environ["AUTOBAHN_CASES"])
if "AUTOBAHN_EXCLUDE_CASES" in os.environ:
    spec["exclude-cases"] = split(os.environ["AUTOBAHN_EXCLUDE_CASES"])
json.dump(spec, open(out, "w"), indent=2)
EOF

# The case ids wstest will run, resolved by wstest's own code.
"$WSPY" - "$SPEC" >"$EXPECTED" <<'EOF'
import json, sys
from autobahntestsuite.caseset import CaseSet
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseSetname, CaseBasename
cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
print("\n".join(cs.parseSpecCases(json.load(open(sys.argv[1])))))
EOF
NCASES=$(grep -c . "$EXPECTED" || true)
[[ $NCASES -gt 0 ]] || { log "error: the case patterns select no cases"; exit 1; }

# --- start the server --------------------------------------------------------------
if [[ -n ${AUTOBAHN_SERVER_CMD:-} ]]; then
    CMD=${AUTOBAHN_SERVER_CMD//\{port\}/$PORT}
    log "server: $CMD"
    bash -c "exec $CMD" >"$OUTDIR/server.log" 2>&1 </dev/null &
else
    log "server: $BIN echo --listen 127.0.0.1:$PORT"
    "$BIN" echo --listen "127.0.0.1:$PORT" >"$OUTDIR/server.log" 2>&1 </dev/null &
fi
SERVER_PID=$!

deadline=$((SECONDS + STARTUP_TIMEOUT))
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "error: server exited before listening; server.log:"
        tail -n 30 "$OUTDIR/server.log" >&2 || true
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "error: server not accepting on 127.0.0.1:$PORT after ${STARTUP_TIMEOUT}s"
        exit 1
    fi
    sleep 0.1
done

# --- run wstest --------------------------------------------------------------------
log "wstest -m fuzzingclient: $NCASES cases against ws://127.0.0.1:$PORT (timeout ${TIMEOUT}s)"
T1=$(now)
(cd "$OUTDIR" && exec timeout -k 10 "$TIMEOUT" "$WSTEST" -m fuzzingclient -s "$SPEC") \
    >"$OUTDIR/wstest.log" 2>&1 </dev/null &
WSTEST_PID=$!
rc=0
wait "$WSTEST_PID" || rc=$?
WSTEST_PID=""
RUN_TIME=$(elapsed "$T1")

status=0
if ((rc == 124 || rc == 137)); then
    log "error: wstest killed by timeout (status $rc, limit ${TIMEOUT}s)"
    status=1
elif ((rc != 0)); then
    log "error: wstest exited with status $rc; wstest.log:"
    tail -n 30 "$OUTDIR/wstest.log" >&2 || true
    status=1
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    srv_rc=0
    wait "$SERVER_PID" || srv_rc=$?
    log "error: server exited during the run (status $srv_rc); server.log:"
    tail -n 30 "$OUTDIR/server.log" >&2 || true
    SERVER_PID=""
    status=1
fi
stop_pid "$SERVER_PID"
SERVER_PID=""

python3 "$SCRIPT_DIR/autobahn-summary.py" --role server --expected-cases "$EXPECTED" \
    "$OUTDIR" "$AGENT" || status=1
echo "  wall time: wstest run ${RUN_TIME} s, total $(elapsed "$T0") s; report: $OUTDIR/index.html"
exit "$status"
