//! Files only their owner may read: the token cache's directory (created `0700`) and
//! file (`0600` from its creation, replaced atomically). A file another user could
//! read, or that is not ours, is refused rather than used, as OpenSSH refuses a
//! private key.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use appfence_core::private_files::{PRIVATE_DIR_MODE, PRIVATE_FILE_MODE};

use crate::error::CliError;

/// A token cache is a few kilobytes; anything far larger is not one.
const MAX_FILE_BYTES: u64 = 1 << 20;

fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Refuses `path` (stat'ed as `meta`) unless it is ours and nobody else may use it.
fn check_ours(path: &Path, meta: &std::fs::Metadata) -> Result<(), CliError> {
    let (kind, fix) = if meta.is_dir() {
        ("directory", "700")
    } else {
        ("file", "600")
    };
    let uid = effective_uid();
    if meta.uid() != uid {
        return Err(CliError::Failed(format!(
            "the token cache {kind} {} belongs to uid {}, not to you (uid {uid}): refusing \
             to use it. Remove it, then run `appfence login` again",
            path.display(),
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CliError::Failed(format!(
            "the token cache {kind} {} is accessible to other users (mode {mode:04o}): \
             refusing to use it, as it holds your sign-in. Run: chmod {fix} '{}' (or remove \
             it and run `appfence login` again)",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Creates `dir` `0700` (and missing parents, with the usual mode) if it does not exist;
/// refuses it if it is not ours or others can reach it.
pub fn ensure_private_dir(dir: &Path) -> Result<(), CliError> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot create {}: {e}",
                dir.display()
            )))
        }
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(CliError::Failed(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    check_ours(dir, &meta)
}

/// The contents of `path`, or `None` if it does not exist. A symbolic link, a file of
/// another user or one that others may read is refused.
pub fn read_private(path: &Path) -> Result<Option<Vec<u8>>, CliError> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(CliError::Failed(format!(
                "the token cache {} is a symbolic link: refusing to follow it",
                path.display()
            )))
        }
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot read the token cache {}: {e}",
                path.display()
            )))
        }
    };
    // The checks are on the file opened, not on the name: no race with a swap.
    let meta = file
        .metadata()
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    check_ours(path, &meta)?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err(CliError::Failed(format!(
            "{} is not a token cache (not a regular file, or larger than 1 MiB)",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    Read::by_ref(&mut file)
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    Ok(Some(bytes))
}

/// Replaces `path`'s contents with `bytes` at once: a temporary file beside it, created
/// `0600` (never readable by others, not even briefly), written and synced, then
/// renamed over it. A crash leaves the old contents or the new, never a mix. The
/// caller holds the cache's lock, so the temporary name cannot be in use.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let failed = |what: &str, e: std::io::Error| {
        let _ = std::fs::remove_file(&temp);
        CliError::Failed(format!("cannot {what} {}: {e}", path.display()))
    };
    // A leftover of a crashed process with the same id.
    let _ = std::fs::remove_file(&temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(|e| failed("write", e))?;
    file.write_all(bytes).map_err(|e| failed("write", e))?;
    file.sync_all().map_err(|e| failed("write", e))?;
    drop(file);
    std::fs::rename(&temp, path).map_err(|e| failed("replace", e))?;
    // The rename itself survives a crash once the directory is synced.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_directory_is_created_private_and_a_reachable_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config/appfence");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        ensure_private_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = ensure_private_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("chmod 700") && e.contains("mode 0755"), "{e}");
    }

    #[test]
    fn an_atomic_write_leaves_a_0600_file_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokens.json");
        write_private(&path, b"one").unwrap();
        assert_eq!(mode(&path), 0o600);
        // Replacing keeps 0600 even over a file that had been loosened: it is a new file.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(read_private(&path).unwrap().unwrap(), b"two");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tokens.json"]);
    }

    #[test]
    fn a_file_others_may_read_or_a_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokens.json");
        assert_eq!(read_private(&path).unwrap(), None);
        write_private(&path, b"{}").unwrap();
        for loose in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
            let e = read_private(&path).unwrap_err().to_string();
            assert!(
                e.contains("accessible to other users") && e.contains("chmod 600"),
                "{loose:o}: {e}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = tmp.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = read_private(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        // Only root can give a file away; elsewhere there is nothing to try.
        if effective_uid() != 0 {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokens.json");
        write_private(&path, b"{}").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let e = read_private(&path).unwrap_err().to_string();
        assert!(e.contains("belongs to uid 65534"), "{e}");
    }
}
