#!/bin/sh
# What raising alerts costs event ingest (issue 19): batches of 500 events that raise no
# alert, one grouped alert, or 500 new alerts, interleaved against a real server on
# loopback. Markdown on stdout.
#
#   bench/alert-bench.sh [--rounds N]
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked -p appfence-bench --bin alert_bench
exec "${CARGO_TARGET_DIR:-target}/release/alert_bench" "$@"
