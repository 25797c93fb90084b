#!/usr/bin/env bash
# The Redis chaos soak (tests/tests/chaos.rs) in release mode, on both
# runtimes, one at a time: two `serve` nodes (ws-tokio, then ws-smol)
# sharing a redis-server that the test starts on a free loopback port,
# 300 clients publishing and subscribing across both nodes, Redis killed
# (SIGKILL) and restarted three times, each node restarted once (SIGTERM).
# Every check is exact (see the test's docs); the figures are printed as
# `FIGURE` and `PHASE` lines at the end, for docs/RELIABILITY.md.
#
# Needs redis-server (scripts/install-deps.sh installs it).
# The test builds the server binaries itself (in release here).
# Usage: scripts/chaos.sh [test name filter, e.g. chaos_soak_smol]
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release -p ws-tests --test chaos -- --ignored --test-threads=1 --nocapture "$@" \
    2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo
echo "==> figures (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
grep -E '^(FIGURE|PHASE)' "$log" || true
exit "$status"
