//! User names from the host's `/etc/passwd`, parsed here. Never through NSS
//! (`getpwuid`): a lookup there may wait on LDAP or SSSD, and the agent must not hang.
//! The parsed file is kept, and read again when it changes or is a minute old.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A passwd file larger than this is not read (no names).
pub const MAX_PASSWD_BYTES: u64 = 4 * 1024 * 1024;
/// The parsed file is read again at the latest after this long.
const MAX_AGE: Duration = Duration::from_secs(60);

/// The host's `/etc/passwd`.
static HOST: LazyLock<UserNames> = LazyLock::new(|| UserNames::new("/etc/passwd"));

/// The name of `uid` in the host's `/etc/passwd`, if it has one there.
pub fn user_name(uid: u32) -> Option<String> {
    HOST.name(uid)
}

/// A cached, parsed passwd file.
#[derive(Debug)]
pub struct UserNames {
    path: PathBuf,
    loaded: Mutex<Option<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    at: Instant,
    stamp: Option<Stamp>,
    names: HashMap<u32, String>,
}

/// What tells that the file changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

impl UserNames {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UserNames {
            path: path.into(),
            loaded: Mutex::new(None),
        }
    }

    pub fn name(&self, uid: u32) -> Option<String> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let current = stamp(&self.path);
        let fresh = loaded
            .as_ref()
            .is_some_and(|l| l.stamp == current && now.duration_since(l.at) < MAX_AGE);
        if !fresh {
            *loaded = Some(Loaded {
                at: now,
                stamp: current,
                names: read_passwd(&self.path),
            });
        }
        loaded.as_ref()?.names.get(&uid).cloned()
    }
}

/// The names by uid of the passwd file at `path`; none when it cannot be read or is
/// larger than [`MAX_PASSWD_BYTES`].
fn read_passwd(path: &Path) -> HashMap<u32, String> {
    let Ok(file) = std::fs::File::open(path) else {
        return HashMap::new();
    };
    let mut bytes = Vec::new();
    // Read one byte more than allowed, to tell a file that grew past the bound.
    if file
        .take(MAX_PASSWD_BYTES + 1)
        .read_to_end(&mut bytes)
        .is_err()
        || bytes.len() as u64 > MAX_PASSWD_BYTES
    {
        return HashMap::new();
    }
    parse_passwd(&String::from_utf8_lossy(&bytes))
}

/// `name:password:uid:gid:gecos:home:shell` lines. Comments, blank lines, NIS
/// compatibility entries (`+`, `-`) and malformed lines (no name, no numeric uid and
/// gid) are skipped; when a uid is
/// listed twice the first name wins (as `getpwuid` answers for files).
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(_password), Some(uid), Some(gid)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if name.is_empty()
            || name.starts_with(['+', '-'])
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            continue;
        }
        let (Ok(uid), Ok(_)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
            continue;
        };
        names.entry(uid).or_insert_with(|| name.to_string());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_skips_what_is_not_an_entry() {
        let text = "# a comment\n\
            root:x:0:0:root:/root:/bin/bash\n\
            \n\
            daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\r\n\
            broken line without colons\n\
            nouid:x::1::/:/bin/sh\n\
            baduid:x:abc:1::/:/bin/sh\n\
            negative:x:-5:1::/:/bin/sh\n\
            :x:7:7::/:/bin/sh\n\
            +nis:x:8:8::/:/bin/sh\n\
            \x20 # indented comment:x:9:9\n\
            alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
            shadow-alice:x:1000:1000::/home/alice:/bin/bash\n\
            short:x:1001\n\
            nogid:x:1002:g::/:/bin/sh\n\
            minimal:x:1003:1003\n\
            big:x:4294967295:1::/:/bin/sh\n\
            toobig:x:4294967296:1::/:/bin/sh\n";
        let names = parse_passwd(text);
        let mut got: Vec<(u32, &str)> = names.iter().map(|(u, n)| (*u, n.as_str())).collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, "root"),
                (1, "daemon"),
                (1000, "alice"),
                (1003, "minimal"),
                (u32::MAX, "big"),
            ]
        );
        assert!(parse_passwd("").is_empty());
    }

    #[test]
    fn the_file_is_read_again_when_it_changes_and_not_when_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let users = UserNames::new(&path);
        assert_eq!(users.name(0), None, "no file: no names");
        std::fs::write(&path, "root:x:0:0::/root:/bin/sh\n").unwrap();
        assert_eq!(users.name(0).as_deref(), Some("root"));
        assert_eq!(users.name(1000), None);
        // A change of size is seen at once, whatever the mtime resolution.
        std::fs::write(
            &path,
            "admin:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(users.name(0).as_deref(), Some("admin"));
        assert_eq!(users.name(1000).as_deref(), Some("bob"));

        let line = "root:x:0:0::/root:/bin/sh\n";
        let mut huge = String::with_capacity(MAX_PASSWD_BYTES as usize + line.len());
        while (huge.len() as u64) <= MAX_PASSWD_BYTES {
            huge.push_str(line);
        }
        std::fs::write(&path, &huge).unwrap();
        assert_eq!(users.name(0), None, "a passwd file over 4 MiB is ignored");
    }

    #[test]
    fn the_host_file_names_root() {
        // Every Linux host this runs on has root as uid 0 in /etc/passwd.
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }
}
