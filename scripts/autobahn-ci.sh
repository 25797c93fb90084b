#!/usr/bin/env bash
# The Autobahn|Testsuite runs of the test suite (scripts/test.sh calls it):
#
#   ws-tokio  every case, 1.* to 13.* (all 517), server and client role
#   ws-smol   the templates' set, 1.* to 10.* and a 54-case sample of
#             12.*/13.* (355 cases), server and client role
#
# Builds both binaries once (release), then runs the four suites at the
# same time: each has its own free loopback port, its own report
# directory (reports/autobahn/{server,client}-{tokio,smol}/) and its own
# wstest process, so they do not interfere; the whole takes about as long
# as the slowest (the full client-role run, see docs/AUTOBAHN.md). Each
# run's output is printed when it ends. Exits 1 if any run failed.
#
# Environment: AUTOBAHN_FULL_RUNTIME [tokio] (the runtime that gets every
# case), AUTOBAHN_TIMEOUT [1800] (seconds per run), and what
# scripts/autobahn-server.sh documents (except AUTOBAHN_CASES and
# AUTOBAHN_OUTDIR, set here).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
cd "$REPO"
FULL=${AUTOBAHN_FULL_RUNTIME:-tokio}
export AUTOBAHN_TIMEOUT=${AUTOBAHN_TIMEOUT:-1800}
unset AUTOBAHN_CASES AUTOBAHN_OUTDIR

"$SCRIPT_DIR/install-autobahn.sh" >/dev/null
# Built one package at a time, as each run script builds it: building both
# in one command unifies their features differently, and the four scripts
# would then rebuild the binaries (their builds must be no-ops here).
cargo build --release -p runtime-tokio
cargo build --release -p runtime-smol

LOGDIR=$REPO/reports/autobahn
mkdir -p "$LOGDIR"
PIDS=()
NAMES=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T0=$(date +%s)
for runtime in tokio smol; do
    for role in server client; do
        name=$role-$runtime
        if [[ $runtime == "$FULL" ]]; then
            AUTOBAHN_CASES="*" "$SCRIPT_DIR/autobahn-$role.sh" "$runtime" >"$LOGDIR/$name.out" 2>&1 &
        else
            "$SCRIPT_DIR/autobahn-$role.sh" "$runtime" >"$LOGDIR/$name.out" 2>&1 &
        fi
        PIDS+=("$!")
        NAMES+=("$name")
    done
done

failed=0
for i in "${!PIDS[@]}"; do
    rc=0
    wait "${PIDS[$i]}" || rc=$?
    PIDS[i]=""
    echo "--- autobahn ${NAMES[$i]} (exit $rc)"
    cat "$LOGDIR/${NAMES[$i]}.out"
    ((rc == 0)) || failed=1
done
PIDS=()
echo "autobahn: four runs in $(($(date +%s) - T0)) s of wall time"
if ((failed)); then
    echo "Autobahn: at least one run failed (see above)" >&2
    exit 1
fi
