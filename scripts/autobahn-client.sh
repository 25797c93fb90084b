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
# shellcheck source-path=SCRIPTDIR source=autobahn-lib.sh
. "$SCRIPT_DIR/autobahn-lib.sh"

ab_init client AUTOBAHN_CLIENT_CMD fuzzingserver CLIENT_PID WSTEST_PID "$@"
[[ $AGENT =~ ^[A-Za-z0-9._-]+$ ]] || { echo "AUTOBAHN_AGENT must match [A-Za-z0-9._-]+" >&2; exit 2; }
ab_prepare
URL=ws://127.0.0.1:$PORT

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
ab_wait_listening wstest "$WSTEST_PID"

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
status=0
ab_wait_run client "$CLIENT_PID" "$T1" || status=1
CLIENT_PID=""
if ! kill -0 "$WSTEST_PID" 2>/dev/null; then
    log "error: wstest exited during the run; wstest.log:"
    tail -n 30 "$OUTDIR/wstest.log" >&2 || true
    status=1
fi
stop_pid "$WSTEST_PID"
WSTEST_PID=""
ab_finish "client run" "$status"
