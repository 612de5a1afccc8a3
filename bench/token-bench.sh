#!/bin/sh
# The token-endpoint benchmark with its baseline: builds this tree's release binaries
# and the release binary of the version before secrets by kind (commit fb13f2f, the
# last one that stored client secrets as Argon2id), then runs `token_bench` with both
# side by side. The baseline is built once, in target/token-bench-baseline.
#
#   bench/token-bench.sh [--quick] [other token_bench options]
set -eu
cd "$(dirname "$0")/.."

BASELINE_COMMIT=fb13f2f
base_src=target/token-bench-baseline/src
base_bin=target/token-bench-baseline/target/release/appfence
if [ ! -x "$base_bin" ]; then
    echo "building the baseline ($BASELINE_COMMIT) once" >&2
    rm -rf "$base_src"
    mkdir -p "$base_src"
    git archive "$BASELINE_COMMIT" | tar -x -C "$base_src"
    CARGO_TARGET_DIR="$PWD/target/token-bench-baseline/target" \
        cargo build --release --locked --manifest-path "$base_src/Cargo.toml" -p appfence-cli
fi
cargo build --release --locked -p appfence-cli -p appfence-bench --bin appfence --bin token_bench
exec target/release/token_bench --baseline "$base_bin" "$@"
