//! Denied (or, in monitor mode, would-be denied) executions, kept in a bounded buffer
//! until the agent sends them to the server in a batch.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use appfence_proto::agent::RuleOutcome;
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
}
