//! The dpkg package index: which files belong to an installed package, and the MD5 sum
//! dpkg recorded for each (`var/lib/dpkg/info/*.md5sums`, lines `<md5>  <path>` with
//! the path relative to `/`).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::digest::Md5Hash;

/// Top-level directories that merged-/usr systems turn into symlinks to `usr/<dir>`;
/// packages still list files under the old name, the kernel reports the new one.
const MERGED_USR_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

#[derive(Debug, Default)]
pub struct PackageIndex {
    md5_by_path: HashMap<PathBuf, Md5Hash>,
    packages: usize,
}

impl PackageIndex {
    /// Reads every `*.md5sums` under `<db_root>/var/lib/dpkg/info`. File paths are taken
    /// relative to `system_root` (normally `/`, the live system). An unreadable
    /// directory is an error; an unreadable or malformed list is skipped.
    pub fn load_dpkg(db_root: &Path, system_root: &Path) -> io::Result<PackageIndex> {
        let info_dir = db_root.join("var/lib/dpkg/info");
        let merged = merged_usr_dirs(system_root);
        let mut index = PackageIndex::default();
        for entry in std::fs::read_dir(&info_dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("md5sums") {
                continue;
            }
            match std::fs::read(&path) {
                Ok(bytes) => {
                    index.add_md5sums(&String::from_utf8_lossy(&bytes), &merged);
                    index.packages += 1;
                }
                Err(e) => {
                    tracing::warn!(list = %path.display(), error = %e, "unreadable dpkg list")
                }
            }
        }
        Ok(index)
    }

    fn add_md5sums(&mut self, text: &str, merged: &[&str]) {
        for line in text.lines() {
            let Some((sum, rel)) = line.split_once("  ") else {
                continue;
            };
            let mut md5 = [0u8; 16];
            if hex::decode_to_slice(sum, &mut md5).is_err() || rel.is_empty() {
                continue;
            }
            self.md5_by_path
                .insert(live_path(Path::new(rel), merged), md5);
        }
    }

    /// The MD5 dpkg recorded for the file at (canonical, absolute) `path`.
    pub fn md5_for(&self, path: &Path) -> Option<&Md5Hash> {
        self.md5_by_path.get(path)
    }

    pub fn files(&self) -> usize {
        self.md5_by_path.len()
    }

    pub fn packages(&self) -> usize {
        self.packages
    }
}

/// Where a file a package lists (absolute or relative to `/`) is on the live system,
/// as the kernel names it: under `/usr` if its top directory is one of `merged`.
pub(super) fn live_path(listed: &Path, merged: &[&str]) -> PathBuf {
    let rel = listed.strip_prefix("/").unwrap_or(listed);
    let top = rel.iter().next().and_then(|t| t.to_str()).unwrap_or("");
    if merged.contains(&top) {
        Path::new("/usr").join(rel)
    } else {
        Path::new("/").join(rel)
    }
}

/// Which of [`MERGED_USR_DIRS`] are symlinks to `usr/<dir>` under `system_root`.
pub(super) fn merged_usr_dirs(system_root: &Path) -> Vec<&'static str> {
    MERGED_USR_DIRS
        .into_iter()
        .filter(|dir| {
            std::fs::read_link(system_root.join(dir)).is_ok_and(|target| {
                let target = target.to_string_lossy();
                target.trim_start_matches('/') == format!("usr/{dir}")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5sums_are_loaded_and_merged_usr_paths_canonicalised() {
        let db = tempfile::tempdir().unwrap();
        let info = db.path().join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(
            info.join("coreutils.md5sums"),
            "7a4179e324c784b99e98fedee05260f7  bin/cat\n\
             db0817401cfd9c5a818ae919d10ba7c5  usr/share/doc/with space\n\
             not-a-sum  usr/bin/bad\n\
             \n",
        )
        .unwrap();
        std::fs::write(info.join("coreutils.list"), "/bin/cat\n").unwrap();
        let system = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("usr/bin", system.path().join("bin")).unwrap();

        let index = PackageIndex::load_dpkg(db.path(), system.path()).unwrap();
        assert_eq!(index.packages(), 1);
        assert_eq!(index.files(), 2);
        assert_eq!(
            hex::encode(index.md5_for(Path::new("/usr/bin/cat")).unwrap()),
            "7a4179e324c784b99e98fedee05260f7"
        );
        assert!(index.md5_for(Path::new("/bin/cat")).is_none());
        assert!(index
            .md5_for(Path::new("/usr/share/doc/with space"))
            .is_some());
        assert!(index.md5_for(Path::new("/usr/bin/bad")).is_none());
    }

    #[test]
    fn without_merged_usr_paths_stay_as_listed() {
        let db = tempfile::tempdir().unwrap();
        let info = db.path().join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(
            info.join("a.md5sums"),
            "7a4179e324c784b99e98fedee05260f7  bin/cat\n",
        )
        .unwrap();
        let index = PackageIndex::load_dpkg(db.path(), db.path()).unwrap();
        assert!(index.md5_for(Path::new("/bin/cat")).is_some());
    }

    #[test]
    fn a_missing_database_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        assert!(PackageIndex::load_dpkg(root.path(), Path::new("/")).is_err());
    }
}
