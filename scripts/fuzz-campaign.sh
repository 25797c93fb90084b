#!/usr/bin/env bash
# The fuzz campaign of docs/RELIABILITY.md: every cargo-fuzz target gets
# BUDGET seconds of CPU time (measured, not wall clock), in two parallel
# lanes, at nice 19, in chunks of CHUNK wall-seconds, so that a loaded
# machine stretches the wall time but not the CPU time counted. Corpora
# persist in <crate>/fuzz/corpus/<target>, crashes in .../artifacts/<target>.
#
#   scripts/fuzz-campaign.sh            # all six targets, 3600 CPU-s each
#   BUDGET=600 scripts/fuzz-campaign.sh hub frames
#
# With autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled = 1,
# the default on desktop kernels), nice only ranks processes within one
# session: a campaign started in its own session (setsid, another terminal)
# takes an equal share from everything else whatever its nice. The script
# therefore lowers its own session's group too (/proc/self/autogroup) when
# it runs as a session leader, i.e. under `setsid`.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Prints one line per chunk and a summary per target; exits 1 on a finding.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUDGET=${BUDGET:-3600}
CHUNK=${CHUNK:-300}
LOGDIR=$ROOT/reports/fuzz
mkdir -p "$LOGDIR"

crate_of() {
    case $1 in
        hub | hub_inputs) echo ws-hub ;;
        frames | handshake | inflate | extensions) echo ws-proto ;;
        *) echo "unknown target $1" >&2; exit 2 ;;
    esac
}

lane() {
    local t dir seeds used cpu rc
    for t in "$@"; do
        dir=$ROOT/$(crate_of "$t")/fuzz
        mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
        seeds=()
        [[ -d $dir/seeds/$t ]] && seeds=("seeds/$t")
        used=0
        while ((used < BUDGET)); do
            (cd "$dir" && /usr/bin/time -f "%U %S" -o "$LOGDIR/$t.time" \
                nice -n 19 cargo +nightly fuzz run -O "$t" "corpus/$t" "${seeds[@]}" -- \
                -max_total_time="$CHUNK" -print_final_stats=1 \
                -artifact_prefix="artifacts/$t/") >>"$LOGDIR/$t.out" 2>&1
            rc=$?
            cpu=$(awk '{printf "%d", $1+$2}' "$LOGDIR/$t.time")
            used=$((used + cpu))
            echo "$(date -u +%FT%TZ) $t: chunk cpu ${cpu} s, total ${used} s, corpus $(ls "$dir/corpus/$t" | wc -l)"
            if ((rc != 0)); then
                echo "FINDING in $t: see $LOGDIR/$t.out and $dir/artifacts/$t/"
                return 1
            fi
        done
        grep -E "stat::number_of_executed_units|cov:" "$LOGDIR/$t.out" | tail -1 | sed "s/^/$t last: /"
    done
}

if [[ $(ps -o sid= $$) -eq $$ ]]; then
    echo 19 >/proc/self/autogroup 2>/dev/null || true
fi

# Build once up front so that compiling is not counted as fuzzing.
(cd "$ROOT/ws-proto/fuzz" && cargo +nightly fuzz build -O) || exit 1
(cd "$ROOT/ws-hub/fuzz" && cargo +nightly fuzz build -O) || exit 1

if (($# > 0)); then
    lane "$@"
    exit $?
fi
lane hub frames inflate &
a=$!
lane hub_inputs handshake extensions &
b=$!
status=0
wait $a || status=1
wait $b || status=1
exit $status
