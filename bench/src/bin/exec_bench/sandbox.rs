//! The private tmpfs mounts the programs run from, mounted in the namespace child's own
//! mount namespace (so the host never sees them), and the few system calls around them.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One tmpfs (its own superblock, so a filesystem mark on it covers nothing else).
pub struct Sandbox {
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new(name: &str) -> io::Result<Sandbox> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("appfence-exec-bench-{name}-"))
            .tempdir_in("/tmp")?;
        let root = dir.path().to_path_buf();
        mount_tmpfs(&root, "appfence-exec-bench", "size=512m,mode=0755")?;
        Ok(Sandbox { root, _dir: dir })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// This tmpfs's mount id (the first field of `/proc/self/mountinfo`).
    pub fn mount_id(&self) -> io::Result<u64> {
        let table = std::fs::read_to_string("/proc/self/mountinfo")?;
        let target = self.root.to_string_lossy();
        table
            .lines()
            .rev()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                (fields.get(4) == Some(&target.as_ref()))
                    .then(|| fields[0].parse::<u64>().ok())
                    .flatten()
            })
            .next()
            .ok_or_else(|| io::Error::other(format!("{target} is not in mountinfo")))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Detached: a process still running from it must not keep us from finishing.
        let _ = unmount_detach(&self.root);
    }
}

pub fn mount_tmpfs(target: &Path, source: &str, options: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(io::Error::other);
    let target_c = c(&target.to_string_lossy())?;
    let (source, fstype, options) = (c(source)?, c("tmpfs")?, c(options)?);
    // SAFETY: every pointer is a live NUL-terminated string.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(
            e.kind(),
            format!("mount tmpfs on {}: {e}", target.display()),
        ))
    }
}

fn unmount_detach(target: &Path) -> io::Result<()> {
    let target = CString::new(target.to_string_lossy().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: live NUL-terminated string.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies `from` to `to` as a root-owned 0755 file.
pub fn install(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("copy {} to {}: {e}", from.display(), to.display()),
        )
    })?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
}

/// Replaces `to` with a fresh copy of `from` (a new inode, so a new file version for
/// every decision cache), atomically: the path never goes missing.
pub fn replace_with_copy(from: &Path, to: &Path) -> io::Result<()> {
    let mut staging = to.as_os_str().to_owned();
    staging.push(".new");
    let staging = PathBuf::from(staging);
    install(from, &staging)?;
    std::fs::rename(&staging, to)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
