//! Who may read appfence's files: the rule behind the start-up check of the server's
//! data directory, key file and config file, and of the agent's state directory.
//!
//! They hold what forges tokens or impersonates devices, so, as OpenSSH does with
//! private keys and PostgreSQL with its data directory, a path that other users can
//! reach is refused rather than used. A deliberate group (a backup operator, say) may
//! be given read access; others never, and nobody but the owner may write.
//!
//! Pure: the caller reads the mode; this decides and words the fix.

use std::path::Path;

/// The mode bits refused on every private path: anything for others, and group write.
const ALWAYS_REFUSED: u32 = 0o027;
/// Refused as well unless a group was deliberately allowed to read.
const GROUP_READ: u32 = 0o050;

/// What appfence creates: directories `0700`, files `0600`.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Whether a path with permission bits `mode` may be used. `allow_group_read` lets its
/// group read (and enter, for a directory), never write. The error names the path,
/// what is wrong and the `chmod` that fixes it.
pub fn check_mode(
    path: &Path,
    mode: u32,
    is_dir: bool,
    allow_group_read: bool,
) -> Result<(), String> {
    let mode = mode & 0o7777;
    let refused = if allow_group_read {
        ALWAYS_REFUSED
    } else {
        ALWAYS_REFUSED | GROUP_READ
    };
    if mode & refused == 0 {
        return Ok(());
    }
    let who = if mode & 0o007 != 0 {
        "other users"
    } else {
        "its group"
    };
    let (strict, with_group) = if is_dir {
        ("700", "750")
    } else {
        ("600", "640")
    };
    let fix = if allow_group_read { with_group } else { strict };
    let kind = if is_dir { "directory" } else { "file" };
    let mut message = format!(
        "the {kind} {} is accessible to {who} (mode {mode:04o}); appfence keeps its files \
         private to its own user: run: chmod {fix} '{}'",
        path.display(),
        path.display()
    );
    if !allow_group_read && mode & 0o007 == 0 && mode & 0o020 == 0 {
        message.push_str(" (or, to let a deliberate group read it, start with --allow-group-read)");
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mode: u32, is_dir: bool, group: bool) -> Result<(), String> {
        check_mode(Path::new("/var/lib/appfence"), mode, is_dir, group)
    }

    #[test]
    fn owner_only_paths_pass() {
        assert_eq!(check(0o700, true, false), Ok(()));
        assert_eq!(check(0o600, false, false), Ok(()));
        assert_eq!(check(0o400, false, false), Ok(()));
        assert_eq!(check(0o500, true, false), Ok(()));
        // The file-type bits of st_mode are ignored.
        assert_eq!(check(0o100600, false, false), Ok(()));
        assert_eq!(check(0o040700, true, false), Ok(()));
    }

    #[test]
    fn others_are_refused_with_the_chmod_that_fixes_it() {
        let err = check(0o755, true, false).unwrap_err();
        assert_eq!(
            err,
            "the directory /var/lib/appfence is accessible to other users (mode 0755); \
             appfence keeps its files private to its own user: run: chmod 700 '/var/lib/appfence'"
        );
        let err = check(0o644, false, false).unwrap_err();
        assert!(err.contains("file") && err.contains("chmod 600"), "{err}");
        assert!(err.contains("mode 0644"), "{err}");
        // Even with a deliberate group, others stay out.
        let err = check(0o604, false, true).unwrap_err();
        assert!(
            err.contains("other users") && err.contains("chmod 640"),
            "{err}"
        );
    }

    #[test]
    fn a_group_reads_only_when_allowed_and_never_writes() {
        let err = check(0o750, true, false).unwrap_err();
        assert!(err.contains("its group"), "{err}");
        assert!(err.contains("--allow-group-read"), "{err}");
        assert_eq!(check(0o750, true, true), Ok(()));
        assert_eq!(check(0o640, false, true), Ok(()));
        let err = check(0o660, false, true).unwrap_err();
        assert!(
            err.contains("its group") && err.contains("chmod 640"),
            "{err}"
        );
        // Group write is never fixed by --allow-group-read, so it is not suggested.
        let err = check(0o620, false, false).unwrap_err();
        assert!(!err.contains("--allow-group-read"), "{err}");
    }
}
