#!/bin/sh
# Queries at a million actions (issue 13): fills a store with 1,000,000 actions over
# 10,000 machines, then times every supported $filter, $orderby, $count, deep $skip and
# nextLink walk through a real `appfence serve`, on SQLite and on PostgreSQL (a
# throwaway cluster from Debian's `postgresql` server binaries). Markdown on stdout.
#
#   bench/query-bench.sh [--quick] [--actions N] [--machines N] [--reps N] [--pages N] [--engine sqlite|postgres|both]
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked -p appfence-cli -p appfence-bench --bin appfence --bin query_bench
exec "${CARGO_TARGET_DIR:-target}/release/query_bench" --bin "${CARGO_TARGET_DIR:-target}/release/appfence" "$@"
