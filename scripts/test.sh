#!/usr/bin/env bash
# The whole test suite, as the README gives it and .ci/run calls it.
#
# Installs what it needs (Autobahn's wstest under ~/.cache, Debian packages
# via apt-get when missing), then: formatting, clippy, every unit,
# integration, property and doc test, the benchmarks' build, and the
# Autobahn|Testsuite against both runtimes in both roles.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step "system packages"
scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-Dwarnings" cargo doc --workspace --no-deps --quiet

step "cargo test"
cargo test --workspace

step "benchmarks build"
cargo bench --workspace --no-run

step "fuzz targets build (type-check)"
cargo check --quiet --manifest-path ws-proto/fuzz/Cargo.toml
cargo check --quiet --manifest-path ws-hub/fuzz/Cargo.toml

step "Autobahn|Testsuite"
scripts/install-autobahn.sh >/dev/null
failed=0
for runtime in tokio smol; do
    scripts/autobahn-server.sh "$runtime" || failed=1
    scripts/autobahn-client.sh "$runtime" || failed=1
done
if [ "$failed" -ne 0 ]; then
    echo "Autobahn: at least one run failed (see above)" >&2
    exit 1
fi
echo "all suites passed"
