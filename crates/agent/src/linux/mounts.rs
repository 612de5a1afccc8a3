//! Which filesystems to mark when no explicit list is given: every local filesystem in
//! `/proc/self/mountinfo`, once per device, without pseudo, network or FUSE filesystems.

use std::collections::HashSet;
use std::path::PathBuf;

/// Filesystems that hold no programs, or whose content lives elsewhere (network, FUSE:
/// deciding on them could wait on a remote server or on a user-space daemon).
const SKIPPED_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "pstore",
    "bpf",
    "debugfs",
    "tracefs",
    "securityfs",
    "mqueue",
    "hugetlbfs",
    "fusectl",
    "configfs",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "9p",
    "afs",
    "gfs2",
    "ocfs2",
    "glusterfs",
    "lustre",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the filesystem.
    pub device: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Parses `/proc/self/mountinfo`; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let fs_type = right.split(' ').next()?;
            Some(MountEntry {
                device: fields.get(2)?.to_string(),
                mount_point: PathBuf::from(unescape_octal(fields.get(4)?)),
                fs_type: fs_type.to_string(),
            })
        })
        .collect()
}

/// The mount points to mark: one per local filesystem.
pub fn local_filesystems(mounts: &[MountEntry]) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    mounts
        .iter()
        .filter(|m| !SKIPPED_TYPES.contains(&m.fs_type.as_str()) && !m.fs_type.starts_with("fuse"))
        .filter(|m| seen.insert(m.device.clone()))
        .map(|m| m.mount_point.clone())
        .collect()
}

/// The mount points of every local filesystem of this mount namespace.
pub fn discover_local_filesystems() -> std::io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(local_filesystems(&parse_mountinfo(&text)))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &field[i + 1..i + 4];
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw
24 22 0:5 / /dev rw,nosuid shared:3 - devtmpfs udev rw
25 22 0:30 / /tmp/my\\040dir rw - tmpfs tmpfs rw
26 22 254:0 /srv /mnt/bind rw - ext4 /dev/vda rw
27 22 0:40 / /mnt/net rw - nfs4 server:/x rw
28 22 0:41 / /mnt/sshfs rw - fuse.sshfs host: rw
garbage line
";

    #[test]
    fn local_filesystems_are_listed_once_each() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts.len(), 7);
        assert_eq!(mounts[3].mount_point, PathBuf::from("/tmp/my dir"));
        assert_eq!(
            local_filesystems(&mounts),
            vec![PathBuf::from("/"), PathBuf::from("/tmp/my dir")]
        );
    }

    #[test]
    fn the_live_mount_table_includes_the_root_filesystem() {
        let mounts = discover_local_filesystems().unwrap();
        assert!(!mounts.is_empty());
    }
}
