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
#   AUTOBAHN_CASES          case patterns, space/comma separated (default: the template's,
#                           "1.* .. 10.*" plus a 54-case sample of 12.*/13.*; "*" = all)
#   AUTOBAHN_EXCLUDE_CASES  excluded patterns (default: none)
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
# shellcheck source-path=SCRIPTDIR source=autobahn-lib.sh
. "$SCRIPT_DIR/autobahn-lib.sh"

ab_init server AUTOBAHN_SERVER_CMD fuzzingclient WSTEST_PID SERVER_PID "$@"
ab_prepare

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
ab_wait_listening server "$SERVER_PID"

# --- run wstest --------------------------------------------------------------------
log "wstest -m fuzzingclient: $NCASES cases against ws://127.0.0.1:$PORT (timeout ${TIMEOUT}s)"
T1=$(now)
(cd "$OUTDIR" && exec timeout -k 10 "$TIMEOUT" "$WSTEST" -m fuzzingclient -s "$SPEC") \
    >"$OUTDIR/wstest.log" 2>&1 </dev/null &
WSTEST_PID=$!
status=0
ab_wait_run wstest "$WSTEST_PID" "$T1" || status=1
WSTEST_PID=""
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
ab_finish "wstest run" "$status"
