#!/usr/bin/env bash
# The agent's trust-data load times side by side: this machine's dpkg database, a
# host-sized rpm database through the real rpm, and that database from the agent's
# cache. Builds the rpm database once (needs rpm/rpmbuild: apt-get install rpm; about
# 2-5 minutes and 1.6 GB in /tmp/appfence-hostsim), then runs the benchmark.
# Usage: bench/trust-load.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/tmp/appfence-hostsim
if [ ! -d "$dir/root" ]; then
    echo "building a host-sized rpm database in $dir (once)" >&2
    python3 bench/hostsim_rpmdb.py "$dir"
    rm -rf "$dir/stage" "$dir/top"
fi
cargo build --release -q -p appfence-bench --bin trust_load
exec target/release/trust_load --rpm-root "$dir/root" "$@"
