#!/bin/sh
# Action creation on PostgreSQL (one replica, two replicas, raw inserts), side by side in
# one run. Needs the server binaries of Debian's `postgresql` package (scripts/test
# installs them); starts its own durable cluster and replicas, and stops them.
#
#   bench/pg-bench.sh [--quick] [--rounds N] [--per-round N] [--concurrency N]
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked -p appfence-cli -p appfence-bench --bin appfence --bin pg_bench
exec target/release/pg_bench --bin target/release/appfence "$@"
