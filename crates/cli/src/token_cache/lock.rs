//! The token cache's exclusive lock: `flock` on a lock file beside it, held around
//! every read-change-write. Two processes refreshing at once would otherwise both
//! present the same refresh token, and the server takes the second use for a stolen
//! token and revokes the sign-in. The kernel releases the lock when its holder exits,
//! however it exits.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use appfence_core::private_files::PRIVATE_FILE_MODE;

use crate::error::CliError;

/// How often a waiting process tries again.
const RETRY: Duration = Duration::from_millis(50);

/// Held while it lives.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

/// Takes the lock on `path` (created `0600` if missing), waiting at most `limit` for
/// another process to let it go.
pub async fn acquire(path: &Path, limit: Duration) -> Result<CacheLock, CliError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| CliError::Failed(format!("cannot open {}: {e}", path.display())))?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(CacheLock { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EWOULDBLOCK | libc::EINTR)) {
            return Err(CliError::Failed(format!(
                "cannot lock {}: {e}",
                path.display()
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "another appfence process has held {} for {} s; try again when it is done",
                path.display(),
                limit.as_secs()
            )));
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_lock_is_exclusive_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokens.lock");
        let held = acquire(&path, Duration::from_secs(1)).await.unwrap();
        // A second open file description (as another process has) must wait, then give up.
        let e = acquire(&path, Duration::from_millis(120))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("another appfence process"), "{e}");
        drop(held);
        acquire(&path, Duration::from_millis(120)).await.unwrap();
    }
}
