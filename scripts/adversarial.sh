#!/usr/bin/env bash
# The full-size adversarial load tests (tests/tests/adversarial.rs) against
# the `serve` binaries of both runtimes, in release mode, one at a time:
# 5,000 slowloris connections, 1,000 never-reading room members, 1,000
# garbage peers and absurd handshakes, a storm of 10,000 connects from one
# address; and the slowloris control run (the same attack sent to a
# listener of the test's own, the floor of the latency measurement).
# Each test stops by itself and asserts behaviour; the figures
# (server RSS, p99 of normal clients loaded and unloaded) are printed as
# `FIGURE` lines at the end, for docs/RELIABILITY.md.
#
# Usage: scripts/adversarial.sh [test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --release --quiet --bin ws-tokio --bin ws-smol
cargo test --release -p ws-tests --test adversarial -- --ignored --test-threads=1 --nocapture "$@" \
    2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo
echo "==> figures"
grep '^FIGURE' "$log" || true
exit "$status"
