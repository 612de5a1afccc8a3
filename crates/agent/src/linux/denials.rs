//! Denied (or, in monitor mode, would-be denied) executions, kept in a bounded buffer
//! until the agent sends them to the server in a batch.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use appfence_proto::agent::{RuleOutcome, MAX_COMMAND_LINE_BYTES};
use appfence_proto::Timestamp;

/// How the file was being loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// `execve` of the file (or of an interpreter named by a script).
    Exec,
    /// An `open` of an ELF object: a library being loaded, or a program run through the
    /// dynamic loader.
    ElfOpen,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenialRecord {
    /// The file, as the kernel names it.
    pub path: Option<PathBuf>,
    /// Hex SHA-256 of the file, if it was computed.
    pub sha256: Option<String>,
    pub pid: u32,
    /// Real user id of the process (best effort: it may have exited).
    pub uid: Option<u32>,
    /// The program of the process that asked: for an exec, the image about to be
    /// replaced, i.e. the parent program of the denied one.
    pub parent_program: Option<PathBuf>,
    /// The command line of the process that asked (for an exec: the one about to be
    /// replaced), arguments joined by spaces, at most [`MAX_COMMAND_LINE_BYTES`].
    pub command_line: Option<String>,
    /// The name of `uid` in the host's `/etc/passwd`.
    pub user: Option<String>,
    pub time: Timestamp,
    pub access: AccessKind,
    /// Monitor mode: the access was allowed and only reported.
    pub monitor_only: bool,
    /// Answered by the deadline default rather than by a decision.
    pub by_deadline: bool,
    /// The file rule that decided it: a block (denied), an audit (allowed, reported).
    pub rule: Option<RuleOutcome>,
    pub indicator_id: Option<String>,
    /// The rule's indicator asked for alerts.
    pub alert: bool,
}

/// A bounded buffer of records; when full the oldest are dropped (and counted).
#[derive(Debug)]
pub struct DenialLog {
    records: Mutex<VecDeque<DenialRecord>>,
    capacity: usize,
    dropped: AtomicU64,
}

impl DenialLog {
    pub fn new(capacity: usize) -> Self {
        DenialLog {
            records: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn push(&self, record: DenialRecord) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= self.capacity {
            records.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        records.push_back(record);
    }

    pub fn drain(&self) -> Vec<DenialRecord> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.drain(..).collect()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts a record that could not even be queued for writing.
    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the agent knows of the process that asked. A worker reads it while the kernel
/// still holds the process for the answer (a refused exec's forked child exits right
/// after it); for answers given without a worker (cached verdicts, deadlines) it is read
/// afterwards, best effort.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessSnapshot {
    pub uid: Option<u32>,
    pub program: Option<PathBuf>,
    pub command_line: Option<String>,
}

impl ProcessSnapshot {
    pub fn take(pid: u32) -> Self {
        ProcessSnapshot {
            uid: process_uid(pid),
            program: process_program(pid),
            command_line: process_command_line(pid),
        }
    }
}

/// The real uid of `pid`, from `/proc/<pid>/status`.
pub fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_uid(&status)
}

fn parse_status_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The executable of `pid`.
pub fn process_program(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// The command line of `pid`, from `/proc/<pid>/cmdline` (see [`format_command_line`]).
pub fn process_command_line(pid: u32) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(format!("/proc/{pid}/cmdline")).ok()?;
    // A few bytes beyond the bound: the character that straddles it is then whole, so
    // it is cut rather than shown as a replacement character.
    let mut raw = Vec::new();
    file.take(MAX_COMMAND_LINE_BYTES as u64 + 4)
        .read_to_end(&mut raw)
        .ok()?;
    format_command_line(&raw)
}

/// NUL-separated arguments as one line: the separators become spaces, trailing NULs
/// go, bytes that are not UTF-8 become U+FFFD, and the result is cut to at most
/// [`MAX_COMMAND_LINE_BYTES`] at a character boundary. `None` when nothing is left
/// (a kernel thread, a process that exited).
pub fn format_command_line(raw: &[u8]) -> Option<String> {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let joined: Vec<u8> = raw[..end]
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    let mut line = String::from_utf8_lossy(&joined).into_owned();
    if line.len() > MAX_COMMAND_LINE_BYTES {
        let mut cut = MAX_COMMAND_LINE_BYTES;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32) -> DenialRecord {
        DenialRecord {
            path: None,
            sha256: None,
            pid,
            uid: None,
            parent_program: None,
            command_line: None,
            user: None,
            time: Timestamp::from_unix_seconds(1),
            access: AccessKind::Exec,
            monitor_only: false,
            by_deadline: false,
            rule: None,
            indicator_id: None,
            alert: false,
        }
    }

    #[test]
    fn the_buffer_keeps_the_newest_and_counts_the_rest() {
        let log = DenialLog::new(2);
        for pid in 1..=3 {
            log.push(record(pid));
        }
        let pids: Vec<u32> = log.drain().iter().map(|r| r.pid).collect();
        assert_eq!(pids, vec![2, 3]);
        assert_eq!(log.dropped(), 1);
        assert!(log.drain().is_empty());
    }

    #[test]
    fn uid_and_program_of_this_process() {
        assert_eq!(
            parse_status_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"),
            Some(1000)
        );
        let me = std::process::id();
        // SAFETY: getuid has no preconditions.
        assert_eq!(process_uid(me), Some(unsafe { libc::getuid() }));
        assert!(process_program(me).is_some());
    }

    #[test]
    fn command_lines_are_joined_by_spaces() {
        assert_eq!(
            format_command_line(b"/usr/bin/python3\0-c\0print(1)\0").as_deref(),
            Some("/usr/bin/python3 -c print(1)")
        );
        // Empty arguments keep their place; only trailing NULs go.
        assert_eq!(
            format_command_line(b"a\0\0b\0\0\0").as_deref(),
            Some("a  b")
        );
        assert_eq!(
            format_command_line(b"no terminator").as_deref(),
            Some("no terminator")
        );
        assert_eq!(format_command_line(b""), None);
        assert_eq!(format_command_line(b"\0\0"), None);
        assert_eq!(
            format_command_line(b"bad\xff\0utf8").as_deref(),
            Some("bad\u{fffd} utf8")
        );
    }

    #[test]
    fn long_command_lines_are_cut_at_a_character_boundary() {
        let exact = vec![b'a'; MAX_COMMAND_LINE_BYTES];
        assert_eq!(
            format_command_line(&exact).unwrap().len(),
            MAX_COMMAND_LINE_BYTES
        );
        // A three-byte character straddling the bound is left out whole.
        let mut raw = vec![b'a'; MAX_COMMAND_LINE_BYTES - 1];
        raw.extend_from_slice("€€".as_bytes());
        let line = format_command_line(&raw).unwrap();
        assert_eq!(line.len(), MAX_COMMAND_LINE_BYTES - 1);
        assert!(line.bytes().all(|b| b == b'a'));
        let mut raw = vec![b'a'; MAX_COMMAND_LINE_BYTES - 3];
        raw.extend_from_slice("€€".as_bytes());
        let line = format_command_line(&raw).unwrap();
        assert_eq!(line.len(), MAX_COMMAND_LINE_BYTES);
        assert!(line.ends_with('€'));
        // Replacement characters count by their UTF-8 length.
        let line = format_command_line(&vec![0xff; MAX_COMMAND_LINE_BYTES]).unwrap();
        assert_eq!(line.len(), MAX_COMMAND_LINE_BYTES / 3 * 3);
        assert!(line.chars().all(|c| c == '\u{fffd}'));
    }

    #[test]
    fn the_command_line_of_this_process() {
        let line = process_command_line(std::process::id()).expect("our command line");
        let first = std::env::args().next().unwrap();
        assert!(line.starts_with(&first), "{line:?} starts with {first:?}");
    }
}
