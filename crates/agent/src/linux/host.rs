//! What a Linux device says about itself at enrolment and in heartbeats: host name, OS,
//! kernel, architecture and addresses, read from `/proc` and `/etc/os-release` (best
//! effort: a missing fact is reported empty, never an error); and whether the kernel
//! command line switches enforcement off for this boot.

use std::net::{Ipv4Addr, Ipv6Addr};

use appfence_proto::agent::{Capabilities, DeviceInfo};

/// The kernel command-line word that starts the agent without enforcing.
pub const BOOT_ESCAPE: &str = "appfence.disable=1";

/// The device's host name, OS, kernel, architecture and addresses; `capabilities` are
/// the enforcer's.
pub fn device_info(capabilities: Capabilities, tags: Vec<String>) -> DeviceInfo {
    DeviceInfo {
        os_platform: "Linux".into(),
        os_version: read("/etc/os-release")
            .and_then(|text| pretty_name(&text))
            .unwrap_or_else(|| "Linux".into()),
        kernel_version: read("/proc/sys/kernel/osrelease").unwrap_or_default(),
        os_architecture: std::env::consts::ARCH.into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        ip_addresses: ip_addresses(),
        capabilities,
        machine_tags: tags,
    }
}

/// The host name the kernel knows (`/proc/sys/kernel/hostname`).
pub fn hostname() -> Option<String> {
    read("/proc/sys/kernel/hostname").filter(|h| !h.is_empty())
}

/// Whether [`BOOT_ESCAPE`] is on the kernel command line of this boot.
pub fn disabled_at_boot() -> bool {
    read("/proc/cmdline").is_some_and(|line| has_boot_escape(&line))
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn has_boot_escape(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|word| word == BOOT_ESCAPE)
}

/// `PRETTY_NAME` of an os-release file, unquoted.
fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    let value = value.trim().trim_matches('"').trim_matches('\'');
    (!value.is_empty()).then(|| value.to_string())
}

/// The host's own IPv4 and global IPv6 addresses, loopback and link-local excluded.
fn ip_addresses() -> Vec<String> {
    let mut out = read("/proc/net/fib_trie")
        .map(|t| local_ipv4(&t))
        .unwrap_or_default();
    out.extend(read("/proc/net/if_inet6").map_or_else(Vec::new, |t| global_ipv6(&t)));
    out
}

/// Addresses the kernel's routing trie marks `/32 host LOCAL`.
fn local_ipv4(fib_trie: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(addr) = last.take() {
                let text = addr.to_string();
                if !addr.is_loopback() && !found.contains(&text) {
                    found.push(text);
                }
            }
        }
    }
    found
}

/// Addresses of `/proc/net/if_inet6` with global scope (`00`).
fn global_ipv6(if_inet6: &str) -> Vec<String> {
    if_inet6
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let hex = fields.next()?;
            let scope = fields.nth(2)?;
            if scope != "00" || hex.len() != 32 {
                return None;
            }
            let bits = u128::from_str_radix(hex, 16).ok()?;
            Some(Ipv6Addr::from(bits).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_and_boot_escape_are_parsed() {
        let text = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("ID=x\n"), None);
        assert!(has_boot_escape(
            "BOOT_IMAGE=/vmlinuz root=/dev/vda1 appfence.disable=1 quiet"
        ));
        assert!(!has_boot_escape("root=/dev/vda1 appfence.disable=0"));
        assert!(!has_boot_escape("xappfence.disable=1"));
    }

    #[test]
    fn addresses_come_from_proc() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 192.0.2.0\n        /24 link UNICAST\n     |-- 192.0.2.2\n        /32 host LOCAL\nLocal:\n     |-- 192.0.2.2\n        /32 host LOCAL\n     |-- 192.0.2.255\n        /32 link BROADCAST\n";
        assert_eq!(local_ipv4(trie), vec!["192.0.2.2"]);
        let inet6 = "00000000000000000000000000000001 01 80 10 80 lo\n\
                     fe8000000000000000fc00fffe000001 04 40 20 80 eth0\n\
                     fd000000000000000000000000000002 04 40 00 82 eth0\n";
        assert_eq!(global_ipv6(inet6), vec!["fd00::2"]);
        let info = device_info(Capabilities::default(), vec!["t".into()]);
        assert_eq!(info.os_platform, "Linux");
        assert!(!info.kernel_version.is_empty());
        assert_eq!(info.machine_tags, vec!["t"]);
        assert!(hostname().is_some());
    }
}
