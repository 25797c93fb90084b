#!/usr/bin/env bash
# Run the Autobahn|Testsuite against our client (client role).
#
#   scripts/autobahn-client.sh tokio|smol
#
# Builds `cargo build --release -p runtime-$RUNTIME`, starts
# `wstest -m fuzzingserver` on a free port bound to 127.0.0.1 only (embedded
# web server disabled), runs
# `target/release/ws-$RUNTIME autobahn-client --url ws://127.0.0.1:PORT --agent ws-$RUNTIME`
# and summarises the report in reports/autobahn/client-$RUNTIME/. Exits
# non-zero on any FAILED case, on NON-STRICT (unless
# AUTOBAHN_ALLOW_NONSTRICT=1), on a missing/short report, or if the client
# failed or timed out.
#
# Environment: as scripts/autobahn-server.sh (AUTOBAHN_CASES,
# AUTOBAHN_EXCLUDE_CASES, AUTOBAHN_ALLOW_NONSTRICT, AUTOBAHN_TIMEOUT,
# AUTOBAHN_AGENT, AUTOBAHN_OUTDIR, AUTOBAHN_HOME), plus
#   AUTOBAHN_CLIENT_CMD  command template replacing our binary, `{url}` and
#                        `{agent}` are substituted; skips the cargo build.
#                        One command (it is exec'd).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

usage() { echo "usage: $0 tokio|smol" >&2; exit 2; }
RUNTIME=${1:-}
if [[ -n ${AUTOBAHN_CLIENT_CMD:-} ]]; then
    [[ $RUNTIME =~ ^[A-Za-z0-9._-]+$ ]] || usage
else
    [[ $RUNTIME == tokio || $RUNTIME == smol ]] || usage
fi

AGENT=${AUTOBAHN_AGENT:-ws-$RUNTIME}
[[ $AGENT =~ ^[A-Za-z0-9._-]+$ ]] || { echo "AUTOBAHN_AGENT must match [A-Za-z0-9._-]+" >&2; exit 2; }
OUTDIR=${AUTOBAHN_OUTDIR:-$REPO/reports/autobahn/client-$RUNTIME}
TIMEOUT=${AUTOBAHN_TIMEOUT:-600}
STARTUP_TIMEOUT=${AUTOBAHN_STARTUP_TIMEOUT:-30}
TEMPLATE=$REPO/tests/autobahn/fuzzingserver.json

log() { printf 'autobahn-client: %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0=$(now)

WSTEST_PID=""
CLIENT_PID=""
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
    stop_pid "$CLIENT_PID"
    stop_pid "$WSTEST_PID"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- wstest --------------------------------------------------------------------
WSTEST=$("$SCRIPT_DIR/install-autobahn.sh" </dev/null)
WSPY=$(dirname "$WSTEST")/python
unset PYTHONHOME PYTHONPATH || true

# --- client binary ---------------------------------------------------------------
if [[ -z ${AUTOBAHN_CLIENT_CMD:-} ]]; then
    log "cargo build --release -p runtime-$RUNTIME"
    (cd "$REPO" && cargo build --release -p "runtime-$RUNTIME")
    BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/ws-$RUNTIME
    [[ $BIN == /* ]] || BIN=$REPO/$BIN
    [[ -x $BIN ]] || { log "error: $BIN not built"; exit 1; }
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=ws://127.0.0.1:$PORT

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
SPEC=$OUTDIR/fuzzingserver.json
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

# --- start wstest -m fuzzingserver on loopback -------------------------------------
# wstest's listenWS binds all interfaces; wrap it to bind 127.0.0.1 only.
# `-u 0` disables the embedded web server (port 8080 by default).
log "wstest -m fuzzingserver on $URL: $NCASES cases"
(cd "$OUTDIR" && exec timeout -k 10 "$((TIMEOUT + 60))" "$WSPY" -c '
import sys
from autobahntestsuite import wstest
import autobahntestsuite.fuzzing as fuzzing
_listen = fuzzing.listenWS
def listen_loopback(factory, contextFactory=None, backlog=50, interface=""):
    return _listen(factory, contextFactory, backlog, "127.0.0.1")
fuzzing.listenWS = listen_loopback
sys.argv = ["wstest"] + sys.argv[1:]
sys.exit(wstest.run())
' -m fuzzingserver -s "$SPEC" -u 0) >"$OUTDIR/wstest.log" 2>&1 </dev/null &
WSTEST_PID=$!

deadline=$((SECONDS + STARTUP_TIMEOUT))
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    if ! kill -0 "$WSTEST_PID" 2>/dev/null; then
        log "error: wstest exited before listening; wstest.log:"
        tail -n 30 "$OUTDIR/wstest.log" >&2 || true
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "error: wstest not accepting on 127.0.0.1:$PORT after ${STARTUP_TIMEOUT}s"
        exit 1
    fi
    sleep 0.1
done

# --- run the client -----------------------------------------------------------------
T1=$(now)
if [[ -n ${AUTOBAHN_CLIENT_CMD:-} ]]; then
    CMD=${AUTOBAHN_CLIENT_CMD//\{url\}/$URL}
    CMD=${CMD//\{agent\}/$AGENT}
    log "client: $CMD (timeout ${TIMEOUT}s)"
    timeout -k 10 "$TIMEOUT" bash -c "exec $CMD" >"$OUTDIR/client.log" 2>&1 </dev/null &
else
    log "client: $BIN autobahn-client --url $URL --agent $AGENT (timeout ${TIMEOUT}s)"
    timeout -k 10 "$TIMEOUT" "$BIN" autobahn-client --url "$URL" --agent "$AGENT" \
        >"$OUTDIR/client.log" 2>&1 </dev/null &
fi
CLIENT_PID=$!
rc=0
wait "$CLIENT_PID" || rc=$?
CLIENT_PID=""
RUN_TIME=$(elapsed "$T1")

status=0
if ((rc == 124 || rc == 137)); then
    log "error: client killed by timeout (status $rc, limit ${TIMEOUT}s)"
    status=1
elif ((rc != 0)); then
    log "error: client exited with status $rc; client.log:"
    tail -n 30 "$OUTDIR/client.log" >&2 || true
    status=1
fi
if ! kill -0 "$WSTEST_PID" 2>/dev/null; then
    log "error: wstest exited during the run; wstest.log:"
    tail -n 30 "$OUTDIR/wstest.log" >&2 || true
    status=1
fi
stop_pid "$WSTEST_PID"
WSTEST_PID=""

python3 "$SCRIPT_DIR/autobahn-summary.py" --role client --expected-cases "$EXPECTED" \
    "$OUTDIR" "$AGENT" || status=1
echo "  wall time: client run ${RUN_TIME} s, total $(elapsed "$T0") s; report: $OUTDIR/index.html"
exit "$status"
