# shellcheck shell=bash
# Shared setup for scripts/autobahn-server.sh and scripts/autobahn-client.sh
# (sourced, not run; the caller keeps `set -euo pipefail`):
#
#   ab_init ROLE CMD_VAR TEMPLATE PID_VAR PID_VAR "$@"
#       ROLE      server|client: log prefix, summary role, default OUTDIR
#       CMD_VAR   name of the env var replacing our binary (skips cargo)
#       TEMPLATE  spec template tests/autobahn/TEMPLATE.json
#       PID_VAR   the two variables holding background PIDs, in the order
#                 the EXIT trap stops them
#     Checks the runtime argument (exit 2), sets RUNTIME AGENT OUTDIR TIMEOUT
#     STARTUP_TIMEOUT TEMPLATE T0, installs the traps.
#   ab_prepare
#     Installs wstest (WSTEST, WSPY), builds our binary (BIN) unless CMD_VAR
#     is set, picks a free PORT, recreates OUTDIR, writes SPEC and EXPECTED
#     and sets NCASES.
#   ab_wait_listening NAME PID   until 127.0.0.1:$PORT accepts (exit 1 if not)
#   ab_wait_run NAME PID T1      wait for the process under test, set RUN_TIME;
#                                returns 1 if it failed or timed out
#   ab_finish RUN_LABEL STATUS   summarise, print the wall times, exit
#
# A process NAME logs to $OUTDIR/NAME.log.

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

log() { printf 'autobahn-%s: %s\n' "$AB_ROLE" "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

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
ab_cleanup() {
    stop_pid "${!AB_PID_VAR1}"
    stop_pid "${!AB_PID_VAR2}"
}

ab_init() {
    AB_ROLE=$1
    AB_CMD=${!2:-}
    TEMPLATE=$REPO/tests/autobahn/$3.json
    AB_PID_VAR1=$4
    AB_PID_VAR2=$5
    printf -v "$AB_PID_VAR1" '%s' ""
    printf -v "$AB_PID_VAR2" '%s' ""
    shift 5

    RUNTIME=${1:-}
    if [[ -n $AB_CMD ]]; then
        [[ $RUNTIME =~ ^[A-Za-z0-9._-]+$ ]] || ab_usage
    else
        [[ $RUNTIME == tokio || $RUNTIME == smol ]] || ab_usage
    fi

    AGENT=${AUTOBAHN_AGENT:-ws-$RUNTIME}
    OUTDIR=${AUTOBAHN_OUTDIR:-$REPO/reports/autobahn/$AB_ROLE-$RUNTIME}
    TIMEOUT=${AUTOBAHN_TIMEOUT:-600}
    STARTUP_TIMEOUT=${AUTOBAHN_STARTUP_TIMEOUT:-30}
    T0=$(now)

    trap ab_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
ab_usage() { echo "usage: $0 tokio|smol" >&2; exit 2; }

ab_prepare() {
    # --- wstest ----------------------------------------------------------------
    WSTEST=$("$SCRIPT_DIR/install-autobahn.sh" </dev/null)
    WSPY=$(dirname "$WSTEST")/python
    unset PYTHONHOME PYTHONPATH || true

    # --- our binary ------------------------------------------------------------
    if [[ -z $AB_CMD ]]; then
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
    SPEC=$OUTDIR/$(basename "$TEMPLATE")
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
}

ab_wait_listening() {
    local name=$1 pid=$2 deadline=$((SECONDS + STARTUP_TIMEOUT))
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "error: $name exited before listening; $name.log:"
            tail -n 30 "$OUTDIR/$name.log" >&2 || true
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "error: $name not accepting on 127.0.0.1:$PORT after ${STARTUP_TIMEOUT}s"
            exit 1
        fi
        sleep 0.1
    done
}

ab_wait_run() {
    local name=$1 pid=$2 t1=$3 rc=0
    wait "$pid" || rc=$?
    RUN_TIME=$(elapsed "$t1")
    if ((rc == 124 || rc == 137)); then
        log "error: $name killed by timeout (status $rc, limit ${TIMEOUT}s)"
        return 1
    elif ((rc != 0)); then
        log "error: $name exited with status $rc; $name.log:"
        tail -n 30 "$OUTDIR/$name.log" >&2 || true
        return 1
    fi
}

ab_finish() {
    local status=$2
    python3 "$SCRIPT_DIR/autobahn-summary.py" --role "$AB_ROLE" --expected-cases "$EXPECTED" \
        "$OUTDIR" "$AGENT" || status=1
    echo "  wall time: $1 ${RUN_TIME} s, total $(elapsed "$T0") s; report: $OUTDIR/index.html"
    exit "$status"
}
