#!/usr/bin/env bash
# The whole test suite, as the README gives it and .ci/run calls it.
#
# Installs what it needs (Autobahn's wstest under ~/.cache, Debian packages
# via apt-get when missing), then: formatting, clippy, every unit,
# integration, property and doc test, the benchmarks' build, and the
# Autobahn|Testsuite against both runtimes in both roles (every case, 1.* to
# 13.*, for ws-tokio; all but a sample of 12.*/13.* for ws-smol; see
# scripts/autobahn-ci.sh).
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

step "layers: the smol adapter links no tokio; library-only adapters carry no application"
# `cargo tree` says "nothing to print" on stderr when nothing matches.
tokio_in_smol=$(cargo tree -p runtime-smol -e normal -i tokio --all-features 2>/dev/null)
if [ -n "$tokio_in_smol" ]; then
    echo "runtime-smol links tokio:" >&2
    echo "$tokio_in_smol" >&2
    exit 1
fi
for adapter in runtime-tokio runtime-smol; do
    app_deps=$(cargo tree -p "$adapter" --no-default-features -e normal --prefix none \
        | awk '{print $1}' | grep -xE 'clap|redis|toml|tracing-subscriber' | sort -u || true)
    if [ -n "$app_deps" ]; then
        echo "$adapter without default features depends on:" $app_deps >&2
        exit 1
    fi
done
echo "ok"

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-Dwarnings" cargo doc --workspace --no-deps --quiet

step "cargo test"
cargo test --workspace

step "benchmarks build"
cargo bench --workspace --no-run

step "fuzz targets build (type-check)"
cargo check --quiet --manifest-path ws-proto/fuzz/Cargo.toml
cargo check --quiet --manifest-path ws-hub/fuzz/Cargo.toml

step "Autobahn|Testsuite: ws-tokio all 517 cases, ws-smol 1.*-10.* and a 12/13 sample, both roles, concurrently"
scripts/autobahn-ci.sh
echo "all suites passed"
