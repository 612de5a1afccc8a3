//! Thin safe wrappers over the system calls the enforcer needs: fanotify, eventfd, poll,
//! fstat and pread. Everything here works on file descriptors, never on paths, so that
//! the decision loop cannot trigger (or wait for) a permission event of its own.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// The permission events the enforcer asks for.
pub const PERMISSION_MASK: u64 = libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A fanotify group of class `FAN_CLASS_CONTENT`. Closing it (dropping the last owner)
/// makes the kernel allow every event still waiting for an answer.
#[derive(Debug)]
pub struct FanotifyGroup {
    fd: OwnedFd,
}

impl FanotifyGroup {
    pub fn new() -> io::Result<FanotifyGroup> {
        let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
        // SAFETY: plain system call; the returned descriptor is owned below.
        let fd = check(unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                event_flags,
            )
        })?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(FanotifyGroup {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Asks for permission events on the whole filesystem holding `path`.
    pub fn mark_filesystem(&self, path: &Path) -> io::Result<()> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c_path` outlives the call.
        check(unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                PERMISSION_MASK,
                libc::AT_FDCWD,
                c_path.as_ptr(),
            )
        })?;
        Ok(())
    }

    /// Stops events in `mask` for the inode behind `file` until it is next written
    /// (no `FAN_MARK_IGNORED_SURV_MODIFY`: a write clears the mark).
    pub fn ignore_until_modified(&self, file: BorrowedFd<'_>, mask: u64) -> io::Result<()> {
        // SAFETY: a null path makes the kernel mark `file` itself.
        check(unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORED_MASK,
                mask,
                file.as_raw_fd(),
                std::ptr::null(),
            )
        })?;
        Ok(())
    }

    /// Removes every inode mark (the ignore marks); filesystem marks stay.
    pub fn flush_inode_marks(&self) -> io::Result<()> {
        // SAFETY: flushing takes no path.
        check(unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_FLUSH,
                0,
                libc::AT_FDCWD,
                std::ptr::null(),
            )
        })?;
        Ok(())
    }

    /// Answers the permission event whose descriptor is `event_fd`.
    pub fn respond(&self, event_fd: RawFd, allow: bool) -> io::Result<()> {
        let response = libc::fanotify_response {
            fd: event_fd,
            response: if allow {
                libc::FAN_ALLOW
            } else {
                libc::FAN_DENY
            },
        };
        let size = std::mem::size_of::<libc::fanotify_response>();
        // SAFETY: writes `size` bytes from a live struct.
        let written = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&response as *const libc::fanotify_response).cast(),
                size,
            )
        };
        if written < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads queued events into `buf`; `Ok(0)` when none is waiting.
    pub fn read_events(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// Whether this process may create a content-class fanotify group at all.
pub fn fanotify_available() -> io::Result<()> {
    FanotifyGroup::new().map(drop)
}

/// One event as read from the group.
#[derive(Debug)]
pub struct RawEvent {
    pub mask: u64,
    /// The file, opened by the kernel for us; `None` for queue overflow.
    pub file: Option<OwnedFd>,
    pub pid: i32,
}

/// Splits a buffer filled by [`FanotifyGroup::read_events`] into events, taking
/// ownership of their descriptors. Stops at the first malformed record.
pub fn parse_events(buf: &[u8]) -> Vec<RawEvent> {
    let header = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut events = Vec::new();
    let mut offset = 0;
    while offset + header <= buf.len() {
        // SAFETY: `header` bytes are in bounds; the read is unaligned-safe.
        let meta: libc::fanotify_event_metadata =
            unsafe { std::ptr::read_unaligned(buf[offset..].as_ptr().cast()) };
        let len = meta.event_len as usize;
        if meta.vers != libc::FANOTIFY_METADATA_VERSION || len < header || offset + len > buf.len()
        {
            break;
        }
        let file = (meta.fd >= 0).then(|| {
            // SAFETY: the kernel installed this descriptor for us; we are its only owner.
            unsafe { OwnedFd::from_raw_fd(meta.fd) }
        });
        events.push(RawEvent {
            mask: meta.mask,
            file,
            pid: meta.pid,
        });
        offset += len;
    }
    events
}

/// An eventfd used to wake the reader thread out of `poll`.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain system call; the descriptor is owned below.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: fresh descriptor.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) already wakes.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter after a wake-up.
    pub fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN when not signalled is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// Waits until `a` or `b` is readable or `timeout` passes; returns (a ready, b ready).
pub fn poll_two(a: BorrowedFd<'_>, b: BorrowedFd<'_>, timeout: Duration) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // Round up so that a deadline 0.3 ms away does not turn into a busy loop.
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a live array of two pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
    if n <= 0 {
        return (false, false);
    }
    (fds[0].revents != 0, fds[1].revents != 0)
}

/// What `fstat` says about an open file, reduced to what decisions need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
    pub size: u64,
    pub uid: u32,
    pub mode: u32,
}

impl FileStat {
    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Owned by root and writable by no one else: only root can change it, so an
    /// ignore mark on it cannot be abused by another user.
    pub fn root_owned_and_protected(&self) -> bool {
        self.uid == 0 && self.mode & 0o022 == 0
    }
}

pub fn fstat(file: BorrowedFd<'_>) -> io::Result<FileStat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: the kernel fills `st` on success.
    check(unsafe { libc::fstat(file.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded.
    let st = unsafe { st.assume_init() };
    Ok(FileStat {
        dev: st.st_dev,
        ino: st.st_ino,
        ctime_sec: st.st_ctime,
        ctime_nsec: st.st_ctime_nsec,
        size: st.st_size.max(0) as u64,
        uid: st.st_uid,
        mode: st.st_mode,
    })
}

/// Reads up to `buf.len()` bytes at `offset` without moving any file position.
pub fn pread(file: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The path the kernel has for an open file (`/proc/self/fd/N`).
pub fn fd_path(file: BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

/// Raises this process's soft limit on open files to the hard limit. Every event waiting
/// for a decision holds a descriptor; running out makes the kernel deny events.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: the kernel fills `limit`.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: reads a live struct.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })?;
    }
    Ok(limit.rlim_cur)
}

/// (major, minor) of the running kernel, from `uname`.
pub fn kernel_version() -> Option<(u32, u32)> {
    let mut uts = std::mem::MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: the kernel fills `uts` on success.
    if unsafe { libc::uname(uts.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: uname succeeded; `release` is NUL-terminated.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.assume_init_ref().release.as_ptr()) };
    parse_kernel_release(&release.to_string_lossy())
}

fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_is_parsed() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_kernel_release("garbage"), None);
    }

    #[test]
    fn parse_events_stops_at_a_truncated_record() {
        assert!(parse_events(&[0u8; 10]).is_empty());
        // A record claiming a wrong metadata version is not trusted.
        let mut buf = vec![0u8; 24];
        buf[0] = 24;
        buf[4] = 99;
        assert!(parse_events(&buf).is_empty());
    }

    #[test]
    fn pread_and_fstat_work_on_a_plain_file() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"\x7fELF-and-more").unwrap();
        let st = fstat(f.as_fd()).unwrap();
        assert!(st.is_regular());
        assert_eq!(st.size, 13);
        let mut buf = [0u8; 4];
        assert_eq!(pread(f.as_fd(), &mut buf, 0).unwrap(), 4);
        assert_eq!(&buf, b"\x7fELF");
    }
}
