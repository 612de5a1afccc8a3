#!/usr/bin/env bash
# Builds the Debian (.deb, with dpkg-deb) and RPM (.rpm, with rpmbuild) packages of
# appfence from a built binary:
#
#   appfence         /usr/bin/appfence and its --help texts
#   appfence-server  the control plane's unit, /etc/appfence/server.toml, its system user
#   appfence-agent   the agent's unit and /etc/appfence/agent.env
#
# Usage: packaging/build-packages.sh [--binary PATH] [--out DIR] [--deb-only|--rpm-only] [--fast]
#   --binary  default target/release/appfence (cargo build --release -p appfence-cli)
#   --out     default target/packages
#   --fast    light compression (gzip -1) instead of xz, for tests
# Every package's file list is checked against what it must hold; a package missing its
# binary, unit or config fails the build.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
binary="$root/target/release/appfence"
out="$root/target/packages"
want_deb=1
want_rpm=1
fast=0
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --deb-only) want_rpm=0; shift ;;
        --fast) fast=1; shift ;;
        --rpm-only) want_deb=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "build-packages: unknown argument $1" >&2; exit 2 ;;
    esac
done

fail() { echo "build-packages: $*" >&2; exit 1; }
[ -x "$binary" ] || fail "no executable binary at $binary (build it: cargo build --release -p appfence-cli)"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
[ -n "$version" ] || fail "cannot read the version from Cargo.toml"
"$binary" --version | grep -q "$version" || fail "$binary is not appfence $version"
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'echo "build-packages: failed at line $LINENO" >&2' ERR

# --- the trees: one directory per package, laid out as installed -------------------
stage() { mkdir -p "$work/$1"; echo "$work/$1"; }
unitdir=lib/systemd/system

t=$(stage appfence)
install -D -m 0755 "$binary" "$t/usr/bin/appfence"
install -d -m 0755 "$t/usr/share/doc/appfence"
"$binary" --help > "$t/usr/share/doc/appfence/appfence.txt"
install -m 0644 "$root/README.md" "$t/usr/share/doc/appfence/README.md"

t=$(stage appfence-server)
install -D -m 0644 "$root/packaging/appfence-server.service" "$t/$unitdir/appfence-server.service"
install -D -m 0600 "$root/packaging/server.toml" "$t/etc/appfence/server.toml"
install -D -m 0644 "$root/packaging/sysusers-appfence.conf" "$t/usr/lib/sysusers.d/appfence.conf"
install -d -m 0755 "$t/usr/share/doc/appfence-server"
"$binary" serve --help > "$t/usr/share/doc/appfence-server/serve.txt"

t=$(stage appfence-agent)
sed 's|/usr/local/bin/appfence|/usr/bin/appfence|' "$root/packaging/appfence-agent.service" \
    > "$work/agent.service"
install -D -m 0644 "$work/agent.service" "$t/$unitdir/appfence-agent.service"
install -D -m 0600 "$root/packaging/agent.env" "$t/etc/appfence/agent.env"
install -d -m 0755 "$t/usr/share/doc/appfence-agent"
"$binary" agent --help > "$t/usr/share/doc/appfence-agent/agent.txt"

# What each package must hold.
required() {
    case "$1" in
        appfence) echo "usr/bin/appfence usr/share/doc/appfence/appfence.txt" ;;
        appfence-server) echo "$unitdir/appfence-server.service etc/appfence/server.toml usr/lib/sysusers.d/appfence.conf" ;;
        appfence-agent) echo "$unitdir/appfence-agent.service etc/appfence/agent.env" ;;
    esac
}
summary() {
    case "$1" in
        appfence) echo "appfence: restrict code execution on Linux hosts through an MDE-compatible API" ;;
        appfence-server) echo "appfence control plane (systemd unit and configuration)" ;;
        appfence-agent) echo "appfence Linux agent (systemd unit and configuration)" ;;
    esac
}
depends() {
    case "$1" in
        appfence) echo "" ;;
        *) echo "appfence (= $version)" ;;
    esac
}
# After install: the server's user and its config file's owner; units known to systemd.
postinst() {
    case "$1" in
        appfence-server) cat <<'EOF'
systemd-sysusers appfence.conf 2>/dev/null || {
    getent group appfence >/dev/null || groupadd -r appfence
    getent passwd appfence >/dev/null || useradd -r -g appfence -d /var/lib/appfence -s /usr/sbin/nologin appfence
}
chown appfence:appfence /etc/appfence/server.toml
chmod 0600 /etc/appfence/server.toml
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
EOF
        ;;
        appfence-agent) cat <<'EOF'
chmod 0600 /etc/appfence/agent.env
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
EOF
        ;;
    esac
}

check_list() { # package, file holding the listed paths
    local missing=""
    for path in $(required "$1"); do
        grep -qE "(^|/|\./)$path\$" "$2" || missing="$missing $path"
    done
    [ -z "$missing" ] || fail "package $1 lacks:$missing"
}

# --- Debian ----------------------------------------------------------------------
if [ "$want_deb" = 1 ]; then
    command -v dpkg-deb >/dev/null || fail "dpkg-deb is not installed"
    arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
    for p in appfence appfence-server appfence-agent; do
        t="$work/$p"
        mkdir -p "$t/DEBIAN"
        {
            echo "Package: $p"
            echo "Version: $version"
            echo "Architecture: $arch"
            echo "Maintainer: appfence <appfence@example.com>"
            echo "Section: admin"
            echo "Priority: optional"
            d=$(depends "$p"); [ -z "$d" ] || echo "Depends: $d"
            echo "Description: $(summary "$p")"
        } > "$t/DEBIAN/control"
        if [ -d "$t/etc" ]; then
            find "$t/etc" -type f | sed "s|^$t||" > "$t/DEBIAN/conffiles"
        fi
        script=$(postinst "$p")
        if [ -n "$script" ]; then
            printf '#!/bin/sh\nset -e\nif [ "$1" = configure ]; then\n%s\nfi\n' "$script" > "$t/DEBIAN/postinst"
            chmod 0755 "$t/DEBIAN/postinst"
        fi
        deb="$out/${p}_${version}_${arch}.deb"
        compress=(-Zxz)
        [ "$fast" = 0 ] || compress=(-Zgzip -z1)
        dpkg-deb --root-owner-group "${compress[@]}" --build "$t" "$deb" >/dev/null
        dpkg-deb -c "$deb" | awk '{print $NF}' > "$work/$p.deb.list"
        check_list "$p" "$work/$p.deb.list"
        rm -rf "$t/DEBIAN"
        echo "$deb"
    done
fi

# --- RPM -------------------------------------------------------------------------
if [ "$want_rpm" = 1 ]; then
    command -v rpmbuild >/dev/null || fail "rpmbuild is not installed (Debian: apt-get install rpm)"
    rpmarch=$(uname -m)
    for p in appfence appfence-server appfence-agent; do
        t="$work/$p"
        spec="$work/$p.spec"
        {
            echo "Name: $p"
            echo "Version: $version"
            echo "Release: 1"
            echo "Summary: $(summary "$p")"
            echo "License: Apache-2.0"
            echo "BuildArch: $rpmarch"
            d=$(depends "$p"); [ -z "$d" ] || echo "Requires: ${d/(= /= }" | tr -d ')'
            echo "%description"
            summary "$p"
            echo "%install"
            echo "cp -a $t/. %{buildroot}/"
            script=$(postinst "$p")
            if [ -n "$script" ]; then
                echo "%post"
                echo "$script"
            fi
            echo "%files"
            (cd "$t" && find . -type f | sed 's|^\.||') | while read -r f; do
                case "$f" in
                    /etc/*) echo "%config(noreplace) $f" ;;
                    *) echo "$f" ;;
                esac
            done
        } > "$spec"
        rpmbuild -bb --quiet \
            --define "_topdir $work/rpmbuild-$p" \
            --define "_rpmdir $out" \
            --define "_build_id_links none" \
            --define "__strip /bin/true" \
            --define "_binary_payload $([ "$fast" = 0 ] && echo w2.xzdio || echo w1.gzdio)" \
            "$spec" >/dev/null 2>"$work/$p.rpmbuild.err" || { cat "$work/$p.rpmbuild.err" >&2; fail "rpmbuild failed for $p"; }
        rpm="$out/$rpmarch/$p-$version-1.$rpmarch.rpm"
        [ -f "$rpm" ] || fail "rpmbuild did not write $rpm"
        rpm -qlp "$rpm" 2>/dev/null > "$work/$p.rpm.list"
        check_list "$p" "$work/$p.rpm.list"
        echo "$rpm"
    done
fi
