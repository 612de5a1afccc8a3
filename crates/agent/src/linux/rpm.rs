//! The rpm package index: which files belong to an installed package, and the digest
//! rpm recorded for each. It is read with the rpm command (present wherever rpm is the
//! package manager), so the database format (sqlite, Berkeley DB, ndb) is rpm's
//! business, not ours. The query runs once per restriction, bounded in time and output.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha512};

use super::digest::{Digests, Md5Hash, Sha256Hash};
use super::dpkg::{live_path, merged_usr_dirs};
use super::sys::pread;

/// Where rpm keeps its database, relative to the root (newer systems use the second
/// and usually link the first to it).
const DATABASE_DIRS: [&str; 2] = ["var/lib/rpm", "usr/lib/sysimage/rpm"];
/// The database files of rpm's backends: sqlite, Berkeley DB, ndb.
const DATABASE_FILES: [&str; 3] = ["rpmdb.sqlite", "Packages", "Packages.db"];

/// One line per file of every installed package: name, the package's digest
/// algorithm, the file's digest, its type and permissions. `%{=TAG}` repeats the
/// package's single value on every line (without it rpm 4.18 refuses the format, yet
/// exits 0).
const QUERY_FORMAT: &str =
    "[%{FILENAMES}\\t%{=FILEDIGESTALGO}\\t%{FILEDIGESTS}\\t%{FILEMODES:perms}\\n]";
/// More output than any real database produces (about 130 bytes per file).
const OUTPUT_LIMIT: u64 = 256 << 20;
/// How much of rpm's error output is kept for the log.
const STDERR_KEPT: usize = 4096;

/// rpm's numbers for digest algorithms (OpenPGP's). A package without the tag is MD5.
const ALGO_MD5: u32 = 1;
const ALGO_SHA256: u32 = 8;
const ALGO_SHA512: u32 = 10;

const CHUNK: usize = 256 * 1024;

/// A digest as rpm recorded it for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageDigest {
    /// Old packages (rpm before 4.6 wrote no algorithm).
    Md5(Md5Hash),
    Sha256(Sha256Hash),
    /// Rare: boxed so the common entries stay small.
    Sha512(Box<[u8; 64]>),
}

/// Every digest recorded for one path. Usually one; a path shared by several packages
/// (multilib pairs, where only one copy is installed) has several, and a file is
/// genuine if it matches any of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageDigests {
    first: PackageDigest,
    more: Vec<PackageDigest>,
}

/// What comparing an open file with its recorded digests concluded.
#[derive(Debug)]
pub enum Verification {
    Matches,
    Differs,
    /// The deadline passed while hashing (only SHA-512 needs a pass of its own).
    TimedOut,
    Failed(io::Error),
}

impl PackageDigests {
    fn all(&self) -> impl Iterator<Item = &PackageDigest> {
        std::iter::once(&self.first).chain(&self.more)
    }

    fn add(&mut self, digest: PackageDigest) {
        if !self.all().any(|d| *d == digest) {
            self.more.push(digest);
        }
    }

    /// Whether checking needs the file's MD5 (computed with its SHA-256, in one pass).
    pub fn wants_md5(&self) -> bool {
        self.all().any(|d| matches!(d, PackageDigest::Md5(_)))
    }

    /// Compares `file`, whose SHA-256 (and MD5 if [`Self::wants_md5`]) are `digests`,
    /// with what rpm recorded.
    pub fn verify(
        &self,
        file: BorrowedFd<'_>,
        digests: &Digests,
        size_limit: u64,
        deadline: Instant,
    ) -> Verification {
        let mut sha512s = Vec::new();
        for recorded in self.all() {
            match recorded {
                PackageDigest::Sha256(sum) if *sum == digests.sha256 => {
                    return Verification::Matches
                }
                PackageDigest::Md5(sum) if Some(sum) == digests.md5.as_ref() => {
                    return Verification::Matches
                }
                PackageDigest::Sha512(sum) => sha512s.push(sum),
                _ => {}
            }
        }
        if sha512s.is_empty() {
            return Verification::Differs;
        }
        match sha512_of(file, size_limit, deadline) {
            Ok(Some(sum)) if sha512s.iter().any(|s| ***s == sum) => Verification::Matches,
            Ok(Some(_)) => Verification::Differs,
            Ok(None) => Verification::TimedOut,
            Err(e) => Verification::Failed(e),
        }
    }
}

/// SHA-512 of `file` through its descriptor; `None` if the deadline passed. The caller
/// has already hashed it whole within `size_limit`, so a file past it has grown.
fn sha512_of(
    file: BorrowedFd<'_>,
    size_limit: u64,
    deadline: Instant,
) -> io::Result<Option<[u8; 64]>> {
    let mut sha = Sha512::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset: u64 = 0;
    loop {
        if Instant::now() >= deadline {
            return Ok(None);
        }
        let n = pread(file, &mut buf, offset)?;
        if n == 0 {
            return Ok(Some(sha.finalize().into()));
        }
        offset += n as u64;
        if offset > size_limit {
            return Err(io::Error::other("the file grew past the hashing limit"));
        }
        sha.update(&buf[..n]);
    }
}

#[derive(Debug, Default)]
pub struct RpmIndex {
    digests_by_path: HashMap<PathBuf, PackageDigests>,
    /// Files skipped because rpm recorded them with an algorithm we do not compute, per
    /// algorithm number.
    unsupported: BTreeMap<u32, usize>,
    /// Lines that are not `name \t algorithm \t digest \t mode`.
    malformed: usize,
}

impl RpmIndex {
    /// The digests rpm recorded for the file at (canonical, absolute) `path`.
    pub fn digests_for(&self, path: &Path) -> Option<&PackageDigests> {
        self.digests_by_path.get(path)
    }

    pub fn files(&self) -> usize {
        self.digests_by_path.len()
    }

    /// Adds one line of the query's output. Directories, symbolic links and ghost files
    /// (no digest) are skipped, as are lines that do not parse.
    fn add_line(&mut self, line: &[u8], merged: &[&str]) {
        match parse_line(line) {
            Line::File { path, digest } => {
                let path = live_path(Path::new(OsStr::from_bytes(path)), merged);
                match self.digests_by_path.get_mut(&path) {
                    Some(known) => known.add(digest),
                    None => {
                        self.digests_by_path.insert(
                            path,
                            PackageDigests {
                                first: digest,
                                more: Vec::new(),
                            },
                        );
                    }
                }
            }
            Line::NoDigest | Line::Blank => {}
            Line::Unsupported(algo) => *self.unsupported.entry(algo).or_default() += 1,
            Line::Malformed => self.malformed += 1,
        }
    }

    /// Says once per algorithm which files cannot be verified (so are never trusted).
    fn log_skipped(&self) {
        for (algo, files) in &self.unsupported {
            tracing::warn!(
                algorithm = algo,
                files,
                "rpm recorded these files with a digest algorithm the agent does not compute: they are not trusted"
            );
        }
        if self.malformed > 0 {
            tracing::warn!(lines = self.malformed, "unreadable lines in rpm's output");
        }
    }
}

#[cfg(test)]
impl RpmIndex {
    /// The index of what the query printed (paths as listed: no merged /usr).
    pub fn from_output(output: &[u8]) -> RpmIndex {
        index_output(output, OUTPUT_LIMIT, &[]).expect("read from memory")
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    File {
        path: &'a [u8],
        digest: PackageDigest,
    },
    /// Not a regular file with content: a directory, a link, a ghost.
    NoDigest,
    Unsupported(u32),
    Blank,
    Malformed,
}

fn parse_line(line: &[u8]) -> Line<'_> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.trim_ascii().is_empty() {
        return Line::Blank;
    }
    // From the right: the name is the only field that may hold a tab.
    let mut fields = line.rsplitn(4, |&b| b == b'\t');
    let (Some(mode), Some(digest), Some(algo), Some(path)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Line::Malformed;
    };
    let (mode, digest, algo) = (mode.trim_ascii(), digest.trim_ascii(), algo.trim_ascii());
    if !path.starts_with(b"/") || path.len() < 2 {
        return Line::Malformed;
    }
    if digest.is_empty() || !mode.starts_with(b"-") {
        return Line::NoDigest;
    }
    let algo = match algo {
        b"" | b"(none)" => ALGO_MD5,
        number => match std::str::from_utf8(number)
            .ok()
            .and_then(|n| n.parse().ok())
        {
            Some(n) => n,
            None => return Line::Malformed,
        },
    };
    let digest = match algo {
        ALGO_MD5 => decode(digest).map(PackageDigest::Md5),
        ALGO_SHA256 => decode(digest).map(PackageDigest::Sha256),
        ALGO_SHA512 => decode(digest).map(|d| PackageDigest::Sha512(Box::new(d))),
        other => return Line::Unsupported(other),
    };
    match digest {
        Some(digest) => Line::File { path, digest },
        None => Line::Malformed,
    }
}

fn decode<const N: usize>(hex_digits: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

/// Where rpm's database is under `root` (as `--dbpath` takes it, absolute within the
/// root), if rpm is a package manager there.
pub fn find_database(root: &Path) -> Option<PathBuf> {
    DATABASE_DIRS
        .iter()
        .find(|dir| {
            DATABASE_FILES
                .iter()
                .any(|file| root.join(dir).join(file).is_file())
        })
        .map(|dir| Path::new("/").join(dir))
}

/// Whether `command` is an executable file.
pub fn is_executable(command: &Path) -> bool {
    std::fs::metadata(command).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `command` (rpm) on the database `db` under `root` and indexes its answer. File
/// paths are those of the live system under `system_root`. Fails if rpm cannot be
/// run, does not finish within `timeout`, fails, or says too much: then nothing from
/// rpm is to be trusted.
pub fn load_rpm(
    command: &Path,
    root: &Path,
    db: &Path,
    system_root: &Path,
    timeout: Duration,
) -> io::Result<RpmIndex> {
    let index = query(command, root, db, system_root, timeout, OUTPUT_LIMIT)?;
    index.log_skipped();
    Ok(index)
}

/// What identifies the state of rpm's database: its data files (of any backend) with
/// their size, modification time and inode. A transaction changes one of them; a query
/// does not (it touches only the lock and shared-memory files, which are left out).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(&'static str, u64, i64, i64, u64)>);

/// sqlite (with its write-ahead log), Berkeley DB, ndb.
const DATA_FILES: [&str; 5] = [
    "rpmdb.sqlite",
    "rpmdb.sqlite-wal",
    "Packages",
    "Packages.db",
    "Index.db",
];

fn fingerprint(dir: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let files: Vec<_> = DATA_FILES
        .iter()
        .filter_map(|name| {
            let m = std::fs::metadata(dir.join(name)).ok()?;
            Some((*name, m.size(), m.mtime(), m.mtime_nsec(), m.ino()))
        })
        .collect();
    (!files.is_empty()).then_some(Fingerprint(files))
}

/// The last index loaded, with what it was loaded from.
type Cached = (
    PathBuf,
    PathBuf,
    PathBuf,
    Fingerprint,
    std::sync::Arc<RpmIndex>,
);
static LAST_LOAD: std::sync::Mutex<Option<Cached>> = std::sync::Mutex::new(None);

/// [`load_rpm`], answered from the last load while rpm's database is unchanged: on a
/// host with a large database the query takes seconds (see BENCHMARKS.md), and it would
/// otherwise run at every restriction. `Ok((index, true))` when it came from the cache.
pub fn load_rpm_cached(
    command: &Path,
    root: &Path,
    db: &Path,
    system_root: &Path,
    timeout: Duration,
) -> io::Result<(std::sync::Arc<RpmIndex>, bool)> {
    let dir = root.join(db.strip_prefix("/").unwrap_or(db));
    let before = fingerprint(&dir);
    if let Some(now) = &before {
        let last = LAST_LOAD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, r, d, print, index)) = last.as_ref() {
            if c == command && r == root && d == db && print == now {
                return Ok((index.clone(), true));
            }
        }
    }
    let index = std::sync::Arc::new(load_rpm(command, root, db, system_root, timeout)?);
    // Cached only if the database did not change while it was read.
    if let Some(print) = before.filter(|b| fingerprint(&dir).as_ref() == Some(b)) {
        *LAST_LOAD.lock().unwrap_or_else(|e| e.into_inner()) = Some((
            command.to_path_buf(),
            root.to_path_buf(),
            db.to_path_buf(),
            print,
            index.clone(),
        ));
    }
    Ok((index, false))
}

fn query(
    command: &Path,
    root: &Path,
    db: &Path,
    system_root: &Path,
    timeout: Duration,
    output_limit: u64,
) -> io::Result<RpmIndex> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(command)
        .arg("--root")
        .arg(root)
        .arg("--dbpath")
        .arg(db)
        .args(["-qa", "--qf", QUERY_FORMAT])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that a timeout kills whatever it started too.
        .process_group(0)
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let merged = merged_usr_dirs(system_root);
    let (sender, indexed) = mpsc::channel();
    let (err_sender, errors) = mpsc::channel();
    let readers = std::thread::Builder::new()
        .name("appfence-rpm-index".into())
        .spawn(move || {
            let _ = sender.send(index_output(stdout, output_limit, &merged));
        })
        .and_then(|_| {
            std::thread::Builder::new()
                .name("appfence-rpm-stderr".into())
                .spawn(move || {
                    let _ = err_sender.send(kept_stderr(stderr));
                })
        });
    if let Err(e) = readers {
        kill_group(&mut child);
        return Err(e);
    }

    let remaining = deadline.saturating_duration_since(Instant::now());
    let index = match indexed.recv_timeout(remaining) {
        Ok(Ok(index)) => index,
        Ok(Err(e)) => {
            kill_group(&mut child);
            return Err(e);
        }
        Err(_) => {
            kill_group(&mut child);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            ));
        }
    };
    let Some(status) = wait_until(&mut child, deadline)? else {
        kill_group(&mut child);
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("did not exit within {timeout:?}"),
        ));
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let stderr = errors.recv_timeout(remaining).unwrap_or_default();
    if !status.success() {
        return Err(io::Error::other(format!("{status}: {stderr}")));
    }
    if !stderr.is_empty() {
        tracing::warn!(stderr = %stderr, "rpm reported problems while listing package files");
    }
    Ok(index)
}

/// Indexes rpm's output as it comes, refusing more than `limit` bytes.
fn index_output(stdout: impl Read, limit: u64, merged: &[&str]) -> io::Result<RpmIndex> {
    let mut reader = BufReader::new(stdout.take(limit + 1));
    let mut index = RpmIndex::default();
    let mut line = Vec::new();
    let mut total: u64 = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(index);
        }
        total += n as u64;
        if total > limit {
            return Err(io::Error::other(format!(
                "more than {limit} bytes of output"
            )));
        }
        index.add_line(&line, merged);
    }
}

/// The start of rpm's error output (the rest is read and dropped, so it never blocks).
fn kept_stderr(stderr: impl Read) -> String {
    let mut kept = Vec::new();
    let mut stderr = stderr;
    let _ = stderr
        .by_ref()
        .take(STDERR_KEPT as u64)
        .read_to_end(&mut kept);
    let _ = io::copy(&mut stderr, &mut io::sink());
    String::from_utf8_lossy(&kept).trim().to_string()
}

fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILLs the child's process group, then reaps the child.
fn kill_group(child: &mut Child) {
    // SAFETY: kill has no memory preconditions; the group is the child's own
    // (`process_group(0)`), and the child is not reaped yet, so its id is not reused.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const MD5_ABC: &str = "900150983cd24fb0d6963f7d28e17f72";
    const SHA512_ABC: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                              2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";

    fn index_of(output: &[u8], merged: &[&str]) -> RpmIndex {
        index_output(output, 1 << 20, merged).unwrap()
    }

    fn file_with(bytes: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// What the agent computes in its one pass over a file: SHA-256 and, on request, MD5.
    fn digests_of(bytes: &[u8]) -> Digests {
        Digests {
            sha256: sha2::Sha256::digest(bytes).into(),
            md5: Some(md5::Md5::digest(bytes).into()),
        }
    }

    fn verifies(index: &RpmIndex, path: &str, content: &[u8]) -> bool {
        let digests = index.digests_for(Path::new(path)).expect("indexed");
        let file = file_with(content);
        match digests.verify(file.as_fd(), &digests_of(content), 1 << 20, far()) {
            Verification::Matches => true,
            Verification::Differs => false,
            other => panic!("{other:?}"),
        }
    }

    /// Lines as rpm 4.18 printed them for packages built with each algorithm.
    #[test]
    fn every_supported_algorithm_is_indexed_and_verified() {
        let output = format!(
            "/usr/bin/a\t8\t{SHA256_ABC}\t-rwxr-xr-x\n\
             /usr/bin/old\t(none)\t{MD5_ABC}\t-rwxr-xr-x\n\
             /usr/bin/md5\t1\t{MD5_ABC}\t-rw-r--r--\n\
             /usr/bin/big\t10\t{SHA512_ABC}\t-rwxr-xr-x\n"
        );
        let index = index_of(output.as_bytes(), &[]);
        assert_eq!(index.files(), 4);
        for path in ["/usr/bin/a", "/usr/bin/old", "/usr/bin/md5", "/usr/bin/big"] {
            assert!(verifies(&index, path, b"abc"), "{path}");
            assert!(!verifies(&index, path, b"abd"), "{path}");
        }
        assert!(!index
            .digests_for(Path::new("/usr/bin/a"))
            .unwrap()
            .wants_md5());
        assert!(index
            .digests_for(Path::new("/usr/bin/old"))
            .unwrap()
            .wants_md5());
        assert!(index.digests_for(Path::new("/usr/bin/other")).is_none());
    }

    #[test]
    fn entries_without_content_are_skipped() {
        let output = "/usr/share/p\t8\t\tdrwxr-xr-x\n\
                      /usr/bin/p-link\t8\t\tlrwxrwxrwx\n\
                      /usr/share/p/ghost\t8\t\t----------\n\
                      /dev/odd\t8\tba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\tcrw-r--r--\n\
                      \n";
        let index = index_of(output.as_bytes(), &[]);
        assert_eq!(index.files(), 0);
        assert_eq!(index.malformed, 0);
    }

    #[test]
    fn unsupported_algorithms_and_malformed_lines_are_counted_not_trusted() {
        let output = format!(
            "/usr/bin/sha1\t2\t281bac2b704617e807850e07e54bae3469f6a2e7\t-rw-r--r--\n\
             /usr/bin/sha1b\t2\t281bac2b704617e807850e07e54bae3469f6a2e7\t-rw-r--r--\n\
             /usr/bin/sha384\t9\t{SHA512_ABC}\t-rw-r--r--\n\
             /usr/bin/short\t8\t{MD5_ABC}\t-rw-r--r--\n\
             /usr/bin/nothex\t8\t{}\t-rw-r--r--\n\
             relative/path\t8\t{SHA256_ABC}\t-rw-r--r--\n\
             /usr/bin/algo\tsha256\t{SHA256_ABC}\t-rw-r--r--\n\
             /usr/bin/fields\t{SHA256_ABC}\n",
            "z".repeat(64)
        );
        let index = index_of(output.as_bytes(), &[]);
        assert_eq!(index.files(), 0);
        assert_eq!(index.unsupported, BTreeMap::from([(2, 2), (9, 1)]));
        assert_eq!(index.malformed, 5);
    }

    #[test]
    fn odd_spacing_tabs_in_names_and_non_utf8_names_are_handled() {
        let mut output = Vec::new();
        output.extend_from_slice(
            format!(" /usr/bin/not-absolute\t8\t{SHA256_ABC}\t-rw-r--r--\n").as_bytes(),
        );
        output.extend_from_slice(
            format!("/usr/share/with  space \t 8 \t {SHA256_ABC} \t -rw-r--r-- \r\n").as_bytes(),
        );
        output.extend_from_slice(
            format!(
                "/usr/share/tab\there\t8\t{}\t-rw-r--r--\n",
                SHA256_ABC.to_uppercase()
            )
            .as_bytes(),
        );
        output.extend_from_slice(b"/usr/share/caf\xe9\t8\t");
        output.extend_from_slice(format!("{SHA256_ABC}\t-rw-r--r--").as_bytes()); // no final newline
        let index = index_of(&output, &[]);
        assert_eq!(index.files(), 3, "{index:?}");
        assert_eq!(index.malformed, 1, "a name must be absolute");
        assert!(verifies(&index, "/usr/share/with  space ", b"abc"));
        assert!(verifies(&index, "/usr/share/tab\there", b"abc"));
        let latin1 = Path::new(OsStr::from_bytes(b"/usr/share/caf\xe9"));
        assert!(index.digests_for(latin1).is_some());
    }

    #[test]
    fn a_path_listed_twice_matches_either_digest() {
        let output = format!(
            "/usr/sbin/tool\t8\t{SHA256_ABC}\t-rwxr-xr-x\n\
             /usr/sbin/tool\t(none)\t{}\t-rwxr-xr-x\n\
             /usr/sbin/tool\t8\t{SHA256_ABC}\t-rwxr-xr-x\n",
            hex::encode(md5::Md5::digest(b"other build"))
        );
        let index = index_of(output.as_bytes(), &[]);
        assert_eq!(index.files(), 1);
        assert_eq!(
            index
                .digests_for(Path::new("/usr/sbin/tool"))
                .unwrap()
                .more
                .len(),
            1,
            "the same digest is kept once"
        );
        assert!(verifies(&index, "/usr/sbin/tool", b"abc"));
        assert!(verifies(&index, "/usr/sbin/tool", b"other build"));
        assert!(!verifies(&index, "/usr/sbin/tool", b"third"));
    }

    #[test]
    fn merged_usr_paths_are_canonicalised() {
        let output = format!("/bin/old\t8\t{SHA256_ABC}\t-rwxr-xr-x\n");
        let index = index_of(output.as_bytes(), &["bin"]);
        assert!(index.digests_for(Path::new("/usr/bin/old")).is_some());
        assert!(index.digests_for(Path::new("/bin/old")).is_none());
        let index = index_of(output.as_bytes(), &[]);
        assert!(index.digests_for(Path::new("/bin/old")).is_some());
    }

    #[test]
    fn output_is_bounded() {
        let line = format!("/usr/bin/a\t8\t{SHA256_ABC}\t-rwxr-xr-x\n");
        let output = line.repeat(10);
        assert!(index_output(output.as_bytes(), output.len() as u64, &[]).is_ok());
        assert!(index_output(output.as_bytes(), output.len() as u64 - 1, &[]).is_err());
    }

    #[test]
    fn sha512_verification_is_bounded_in_time() {
        let index = index_of(
            format!("/usr/bin/big\t10\t{SHA512_ABC}\t-rwxr-xr-x\n").as_bytes(),
            &[],
        );
        let digests = index.digests_for(Path::new("/usr/bin/big")).unwrap();
        let file = file_with(b"abc");
        assert!(matches!(
            digests.verify(file.as_fd(), &digests_of(b"abc"), 1 << 20, Instant::now()),
            Verification::TimedOut
        ));
    }

    #[test]
    fn the_database_is_found_by_any_backend() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(find_database(root.path()), None);
        std::fs::create_dir_all(root.path().join("var/lib/rpm")).unwrap();
        assert_eq!(find_database(root.path()), None, "an empty directory");
        for file in DATABASE_FILES {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("usr/lib/sysimage/rpm");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), b"").unwrap();
            assert_eq!(
                find_database(root.path()).as_deref(),
                Some(Path::new("/usr/lib/sysimage/rpm")),
                "{file}"
            );
        }
    }

    /// A stand-in for rpm: a shell script. Written by a child process, so that no fork
    /// of this (multi-threaded) test process holds it open for writing when it is run.
    fn fake_rpm(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("rpm");
        let mut writer = Command::new("/bin/sh")
            .args(["-c", "cat > \"$0\" && chmod 755 \"$0\""])
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        writer
            .stdin
            .take()
            .unwrap()
            .write_all(format!("#!/bin/sh\n{body}").as_bytes())
            .unwrap();
        assert!(writer.wait().unwrap().success());
        path
    }

    fn run_fake(body: &str, timeout: Duration) -> (io::Result<RpmIndex>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let rpm = fake_rpm(dir.path(), body);
        let result = query(
            &rpm,
            dir.path(),
            Path::new("/var/lib/rpm"),
            dir.path(),
            timeout,
            1 << 20,
        );
        (result, dir)
    }

    #[test]
    fn the_query_is_run_with_the_root_and_database() {
        let body = format!(
            "printf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\n\
             echo 'warning: something odd' >&2\n\
             printf '/usr/bin/a\\t8\\t{SHA256_ABC}\\t-rwxr-xr-x\\n'\n"
        );
        let (index, dir) = run_fake(&body, Duration::from_secs(10));
        assert_eq!(index.unwrap().files(), 1);
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        let expected = format!(
            "--root\n{}\n--dbpath\n/var/lib/rpm\n-qa\n--qf\n{QUERY_FORMAT}\n",
            dir.path().display()
        );
        assert_eq!(args, expected);
    }

    #[test]
    fn a_failing_or_hanging_query_is_an_error() {
        let (failed, _dir) = run_fake(
            &format!(
                "printf '/usr/bin/a\\t8\\t{SHA256_ABC}\\t-rwxr-xr-x\\n'\n\
                 echo 'error: cannot open Packages database' >&2\nexit 1\n"
            ),
            Duration::from_secs(10),
        );
        let message = failed.unwrap_err().to_string();
        assert!(message.contains("cannot open Packages"), "{message}");

        let started = Instant::now();
        let (hung, _dir) = run_fake("sleep 30\n", Duration::from_millis(300));
        assert_eq!(hung.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));

        // Output closed early, process still running: the exit is awaited until the deadline.
        let started = Instant::now();
        let (lingering, _dir) = run_fake("exec >&- 2>&-\nsleep 30\n", Duration::from_millis(300));
        assert_eq!(lingering.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));

        let missing = query(
            Path::new("/nonexistent/rpm"),
            Path::new("/"),
            Path::new("/var/lib/rpm"),
            Path::new("/"),
            Duration::from_secs(1),
            1 << 20,
        );
        assert!(missing.is_err());
    }
}
