//! Which filesystems to mark when no explicit list is given: every local filesystem in
//! `/proc/self/mountinfo`, once per device, without pseudo, network or FUSE filesystems;
//! and [`MountWatcher`], which notices filesystems mounted later.

use std::collections::HashSet;
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MOUNTINFO: &str = "/proc/self/mountinfo";
/// The watcher looks at its stop flag this often.
const WATCH_TICK: Duration = Duration::from_millis(500);
/// ... and re-reads the mount table at least this often, in case a change notification
/// was missed.
const RESCAN_EVERY: Duration = Duration::from_secs(5);

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

fn is_local(m: &MountEntry) -> bool {
    !SKIPPED_TYPES.contains(&m.fs_type.as_str()) && !m.fs_type.starts_with("fuse")
}

/// The local filesystems of `mounts` whose device is not in `known` (one entry per
/// device), which are added to `known`.
pub fn new_local_filesystems(
    mounts: &[MountEntry],
    known: &mut HashSet<String>,
) -> Vec<MountEntry> {
    mounts
        .iter()
        .filter(|m| is_local(m))
        .filter(|m| known.insert(m.device.clone()))
        .cloned()
        .collect()
}

/// Every local filesystem of this mount namespace, once per device.
pub fn discover_local_mounts() -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string(MOUNTINFO)?;
    Ok(new_local_filesystems(
        &parse_mountinfo(&text),
        &mut HashSet::new(),
    ))
}

/// A thread that watches the mount table (`POLLPRI` on `/proc/self/mountinfo`, plus a
/// periodic re-read) and hands each local filesystem it has not seen to a callback.
/// Stopping is a flag: the thread notices it within [`WATCH_TICK`] and is not joined.
pub struct MountWatcher {
    stop: Arc<AtomicBool>,
}

impl MountWatcher {
    /// Starts watching. `known` are the devices (`major:minor`) already handled; `scope`
    /// limits the watch to mount points under a path (tests). `on_new` returns false
    /// when watching is pointless from now on (the group is gone).
    pub fn start(
        known: HashSet<String>,
        scope: Option<PathBuf>,
        on_new: impl FnMut(&MountEntry) -> bool + Send + 'static,
    ) -> std::io::Result<MountWatcher> {
        let file = std::fs::File::open(MOUNTINFO)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("mount-watcher".into())
            .spawn(move || watch(file, known, scope, on_new, &flag))?;
        Ok(MountWatcher { stop })
    }
}

impl Drop for MountWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn watch(
    mut file: std::fs::File,
    mut known: HashSet<String>,
    scope: Option<PathBuf>,
    mut on_new: impl FnMut(&MountEntry) -> bool,
    stop: &AtomicBool,
) {
    let mut last_scan = Instant::now();
    let mut text = String::new();
    // Reading the table once arms the change notification.
    let mut changed = true;
    while !stop.load(Ordering::SeqCst) {
        if changed || last_scan.elapsed() >= RESCAN_EVERY {
            last_scan = Instant::now();
            text.clear();
            if let Err(e) = file.rewind().and_then(|()| file.read_to_string(&mut text)) {
                tracing::warn!(error = %e, "cannot read the mount table; new mounts are not marked");
                return;
            }
            let mounts: Vec<MountEntry> = parse_mountinfo(&text)
                .into_iter()
                .filter(|m| in_scope(&m.mount_point, scope.as_deref()))
                .collect();
            for mount in new_local_filesystems(&mounts, &mut known) {
                if stop.load(Ordering::SeqCst) || !on_new(&mount) {
                    return;
                }
            }
        }
        changed = wait_for_change(&file, WATCH_TICK);
    }
}

fn in_scope(mount_point: &Path, scope: Option<&Path>) -> bool {
    scope.is_none_or(|s| mount_point.starts_with(s))
}

/// Whether the mount table changed within `timeout` (the kernel flags it with POLLPRI).
fn wait_for_change(file: &std::fs::File, timeout: Duration) -> bool {
    let mut fds = [libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    }];
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a live array of one pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
    n > 0 && fds[0].revents & (libc::POLLPRI | libc::POLLERR) != 0
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
        let points: Vec<PathBuf> = new_local_filesystems(&mounts, &mut HashSet::new())
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
        assert_eq!(
            points,
            vec![PathBuf::from("/"), PathBuf::from("/tmp/my dir")]
        );
    }

    #[test]
    fn only_unseen_devices_are_new() {
        let mounts = parse_mountinfo(SAMPLE);
        let mut known = HashSet::new();
        let first: Vec<PathBuf> = new_local_filesystems(&mounts, &mut known)
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
        assert_eq!(
            first,
            vec![PathBuf::from("/"), PathBuf::from("/tmp/my dir")]
        );
        assert!(new_local_filesystems(&mounts, &mut known).is_empty());
        let more = format!("{SAMPLE}29 22 0:50 / /media/usb rw - vfat /dev/sdb1 rw\n");
        let added = new_local_filesystems(&parse_mountinfo(&more), &mut known);
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].mount_point, PathBuf::from("/media/usb"));
        assert!(in_scope(Path::new("/tmp/a/b"), Some(Path::new("/tmp/a"))));
        assert!(!in_scope(Path::new("/tmp/ab"), Some(Path::new("/tmp/a"))));
        assert!(in_scope(Path::new("/x"), None));
    }

    #[test]
    fn the_live_mount_table_includes_the_root_filesystem() {
        let mounts = discover_local_mounts().unwrap();
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/")));
    }
}
