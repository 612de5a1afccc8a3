#!/bin/sh
# appfence's execution-overhead benchmark, from a fresh Debian machine, as root:
# installs fapolicyd (Debian's package) without ever letting it start on the host,
# then runs `exec_bench` (which runs fapolicyd only inside its private namespace).
# Besides the restricted case it measures appfence unrestricted with a 10,001-hash
# blocklist, against its own no-agent baseline in the same session.
#
#   bench/exec-bench.sh [--quick] [other exec_bench options]
#
# Installing fapolicyd the plain way is dangerous: its package enables and starts a
# service whose default rules deny executing anything untrusted, and on Debian nothing
# is trusted (no rpm database), so the host could no longer run programs. Hence, before
# installing: the service is masked (systemd then cannot start it, now or at boot) and
# a policy-rc.d forbids starting services during the installation; after it, the
# service's enable link is removed and no fapolicyd may be running.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "exec-bench.sh: run as root" >&2
    exit 1
fi

mask=/etc/systemd/system/fapolicyd.service
if [ ! -x /usr/sbin/fapolicyd ]; then
    echo "installing fapolicyd (service masked, not started)" >&2
    mkdir -p /etc/systemd/system
    [ -e "$mask" ] || ln -s /dev/null "$mask"
    policy=/usr/sbin/policy-rc.d
    added_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 0755 "$policy"
        added_policy=1
    fi
    status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y fapolicyd || status=$?
    [ -z "$added_policy" ] || rm -f "$policy"
    rm -f /etc/systemd/system/multi-user.target.wants/fapolicyd.service
    [ "$status" -eq 0 ] || { echo "exec-bench.sh: apt-get install fapolicyd failed" >&2; exit 1; }
fi
if pgrep -x fapolicyd >/dev/null 2>&1; then
    echo "exec-bench.sh: a fapolicyd is running on this host; stop it first" >&2
    exit 1
fi
if ! command -v gcc >/dev/null 2>&1; then
    echo "note: no gcc, workload b falls back to 'ls --version' (apt-get install -y gcc for the compiled program)" >&2
fi

cd "$(dirname "$0")/.."
exec cargo run --release -p appfence-bench --bin exec_bench -- "$@"
