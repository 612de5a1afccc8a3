//! The server's files are its owner's alone: the data directory is created `0700` and
//! checked at every start, with the files that hold secrets in it; a path that other
//! users can reach is refused with the `chmod` that fixes it
//! (`appfence_core::private_files` decides).

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use appfence_core::private_files::{check_mode, PRIVATE_DIR_MODE};

/// Files of the data directory that hold secrets or what protects them.
pub const SECRET_FILES: &[&str] = &[
    "appfence.db",
    "appfence.db-wal",
    "appfence.db-shm",
    "master.key",
    "demo.json",
    "demo-devices",
];

/// Refuses `path` (already stat'ed as `meta`) if others can reach it.
pub fn check_private(
    path: &Path,
    meta: &std::fs::Metadata,
    allow_group_read: bool,
) -> Result<(), String> {
    check_mode(path, meta.mode(), meta.is_dir(), allow_group_read)
}

/// Refuses `path` if it exists and others can reach it.
pub fn check_existing(path: &Path, allow_group_read: bool) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) => check_private(path, &meta, allow_group_read),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Creates the data directory `0700` (with any missing parents) if it does not exist;
/// then refuses it, or any of its secret files, if others can reach them.
pub fn prepare_data_dir(dir: &Path, allow_group_read: bool) -> Result<(), String> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(dir)
            .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read the data directory {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "the data directory {} is not a directory",
            dir.display()
        ));
    }
    check_private(dir, &meta, allow_group_read)?;
    for name in SECRET_FILES {
        check_existing(&dir.join(name), allow_group_read)?;
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
    fn a_new_data_directory_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/data");
        prepare_data_dir(&dir, false).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // Starting again on it is fine.
        prepare_data_dir(&dir, false).unwrap();
    }

    #[test]
    fn a_reachable_directory_or_secret_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        prepare_data_dir(&dir, false).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare_data_dir(&dir, false).unwrap_err();
        assert!(
            err.contains(&format!("chmod 700 '{}'", dir.display())),
            "{err}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(prepare_data_dir(&dir, false).is_err());
        prepare_data_dir(&dir, true).unwrap();

        let db = dir.join("appfence.db-wal");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = prepare_data_dir(&dir, true).unwrap_err();
        assert!(
            err.contains("appfence.db-wal") && err.contains("other users"),
            "{err}"
        );
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        prepare_data_dir(&dir, true).unwrap();
        // Files appfence does not own are not its business.
        let other = dir.join("README");
        std::fs::write(&other, b"").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare_data_dir(&dir, true).unwrap();
    }
}
