//! The decision loop. One reader thread owns the fanotify group: it reads events,
//! answers at once what the cache (or the agent's own pid) decides, hands the rest to a
//! bounded queue of worker threads, writes their answers, and answers every event still
//! open at its deadline with the configured default. Only the reader touches the group,
//! so stopping it closes the group for sure (the kernel then allows everything), even
//! if a worker is stuck on a slow disk. The reader never blocks on anything but `poll`;
//! logging and the denial records happen on the workers, after the answer.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use appfence_core::Clock;
use appfence_proto::agent::RuleOutcome;

use super::cache::{
    verdict_for, DecisionCache, EventKind, FileKey, Knowledge, RuleHit, Trust, Verdict,
};
use super::denials::{AccessKind, DenialLog, DenialRecord, ProcessSnapshot};
use super::digest::{is_elf, Sha256Hash};
use super::passwd::user_name;
use super::sys::{
    fd_path, fstat, parse_events, poll_two, FanotifyGroup, RawEvent, Waker, PERMISSION_MASK,
};
use super::trust::{TrustOutcome, TrustSet};

/// The reader wakes at least this often, even with nothing to do.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Reads per round before deadlines and answers are looked at again.
const MAX_READS_PER_ROUND: usize = 16;
const READ_BUFFER: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub deadline: Duration,
    pub answer_on_deadline: Verdict,
    pub queue_bound: usize,
    pub workers: usize,
    pub cache_capacity: usize,
    /// Events from this process are allowed without a look.
    pub own_pid: i32,
    /// Enforce the restriction; otherwise only the block rules deny.
    pub restricting: bool,
    /// Test hook: every decision first sleeps this long (a slow trust check).
    #[cfg(test)]
    pub decision_delay: Duration,
}

/// Counters, readable at any time through [`EnforcerStats`].
#[derive(Debug, Default)]
pub struct Counters {
    events: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    would_deny: AtomicU64,
    deadline_expired: AtomicU64,
    queue_full: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    ignore_marks: AtomicU64,
    own_process: AtomicU64,
    overflows: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of the enforcer's counters (since the enforcer was created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnforcerStats {
    /// Events read from the kernel.
    pub events: u64,
    /// Events answered "allow", for any reason (including the deadline default and
    /// monitor mode).
    pub allowed: u64,
    /// Events answered "deny", for any reason.
    pub denied: u64,
    /// Monitor mode: events that would have been denied (answered "allow").
    pub would_deny: u64,
    /// Events answered with the default because no decision was ready at the deadline.
    pub deadline_expired: u64,
    /// Events answered with the default at once because the worker queue was full.
    pub queue_full: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Inode ignore marks added.
    pub ignore_marks: u64,
    /// Events from the agent's own process.
    pub own_process: u64,
    /// Kernel queue overflows (the kernel allowed those events itself).
    pub overflows: u64,
    /// Denial records lost because a buffer was full.
    pub denials_dropped: u64,
}

/// State shared by the enforcer, the reader and the workers; outlives each run.
pub struct Shared {
    pub counters: Counters,
    pub denials: DenialLog,
    /// Bumped when the allowlist changes: the reader then forgets its cache and its
    /// ignore marks.
    pub generation: AtomicU64,
    /// The generation the reader has put in force.
    pub applied_generation: AtomicU64,
    pub monitor: AtomicBool,
    pub clock: Arc<dyn Clock>,
}

impl Shared {
    pub fn stats(&self) -> EnforcerStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EnforcerStats {
            events: get(&c.events),
            allowed: get(&c.allowed),
            denied: get(&c.denied),
            would_deny: get(&c.would_deny),
            deadline_expired: get(&c.deadline_expired),
            queue_full: get(&c.queue_full),
            cache_hits: get(&c.cache_hits),
            cache_misses: get(&c.cache_misses),
            ignore_marks: get(&c.ignore_marks),
            own_process: get(&c.own_process),
            overflows: get(&c.overflows),
            denials_dropped: self.denials.dropped(),
        }
    }
}

/// A permission event handed to a worker.
struct DecideJob {
    id: u64,
    file: Arc<OwnedFd>,
    /// The process that asked, still held by the kernel while the job runs.
    pid: i32,
    kind: EventKind,
    key: FileKey,
    root_protected: bool,
    known: Knowledge,
    deadline: Instant,
    generation: u64,
}

/// An answered denial, to be written down by a worker.
struct RecordJob {
    file: Arc<OwnedFd>,
    pid: i32,
    kind: EventKind,
    sha256: Option<Sha256Hash>,
    rule: Option<RuleHit>,
    monitor_only: bool,
    by_deadline: bool,
    /// Read by the worker before the answer, when a worker decided.
    process: Option<ProcessSnapshot>,
}

enum Job {
    Decide(DecideJob),
    Record(RecordJob),
}

/// A worker's conclusion about one event.
struct Outcome {
    id: u64,
    key: FileKey,
    /// `None`: the deadline came first.
    verdict: Option<Verdict>,
    /// What may be cached (not conclusions drawn from a read error).
    learned: Knowledge,
    sha256: Option<Sha256Hash>,
    rule: Option<RuleHit>,
    /// Events to stop asking about for this inode, if allowed.
    ignore_mask: u64,
    generation: u64,
    /// The asking process, read for what will be recorded (a denial, an audit).
    process: Option<ProcessSnapshot>,
}

/// A running decision loop.
pub struct Engine {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    reader: Option<JoinHandle<()>>,
    /// The reader holds the only strong reference, so stopping it still closes the
    /// group; others may borrow it briefly to add marks.
    group: Weak<FanotifyGroup>,
}

impl Engine {
    /// Starts the reader and the workers on their own OS threads. The group must be
    /// marked already; events queued meanwhile are read at once.
    pub fn start(
        group: FanotifyGroup,
        trust: Arc<TrustSet>,
        settings: EngineSettings,
        shared: Arc<Shared>,
    ) -> std::io::Result<Engine> {
        let waker = Arc::new(Waker::new()?);
        let stop = Arc::new(AtomicBool::new(false));
        let (job_tx, job_rx) = mpsc::sync_channel(settings.queue_bound.max(1));
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (outcome_tx, outcome_rx) = mpsc::channel();
        for n in 0..settings.workers.max(1) {
            let worker = Worker {
                jobs: job_rx.clone(),
                outcomes: outcome_tx.clone(),
                waker: waker.clone(),
                trust: trust.clone(),
                shared: shared.clone(),
                stop: stop.clone(),
                restricting: settings.restricting,
                #[cfg(test)]
                decision_delay: settings.decision_delay,
            };
            // Workers are not joined: one stuck on a slow disk must not hold up
            // unrestrict. They end when the reader drops the job queue.
            std::thread::Builder::new()
                .name(format!("fanotify-worker-{n}"))
                .spawn(move || worker.run())?;
        }
        let generation = shared.generation.load(Ordering::Acquire);
        let group = Arc::new(group);
        let weak_group = Arc::downgrade(&group);
        let reader = Reader {
            group,
            cache: DecisionCache::new(settings.cache_capacity),
            pending: PendingQueue::default(),
            jobs: job_tx,
            outcomes: outcome_rx,
            waker: waker.clone(),
            stop: stop.clone(),
            generation,
            settings,
            shared,
        };
        let reader = std::thread::Builder::new()
            .name("fanotify-reader".into())
            .spawn(move || reader.run())?;
        Ok(Engine {
            stop,
            waker,
            reader: Some(reader),
            group: weak_group,
        })
    }

    /// The group, for adding filesystem marks while running (new mounts). Upgrade it
    /// only for the duration of a mark: it fails once the engine stopped.
    pub fn group(&self) -> Weak<FanotifyGroup> {
        self.group.clone()
    }

    /// Wakes the reader so it notices a changed allowlist now rather than at its next
    /// event.
    pub fn nudge(&self) {
        self.waker.wake();
    }

    /// Stops the reader, which closes the group: from then on the kernel allows
    /// everything, including events that were still waiting.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct PendingEvent {
    /// `None` once answered.
    file: Option<Arc<OwnedFd>>,
    pid: i32,
    kind: EventKind,
    deadline: Instant,
}

/// Events handed to workers, in arrival order, so also in deadline order. Ids are
/// consecutive, so an id is an index.
#[derive(Default)]
struct PendingQueue {
    first_id: u64,
    events: VecDeque<PendingEvent>,
}

impl PendingQueue {
    fn push(&mut self, event: PendingEvent) -> u64 {
        self.events.push_back(event);
        self.first_id + self.events.len() as u64 - 1
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut PendingEvent> {
        let index = id.checked_sub(self.first_id)?;
        self.events.get_mut(usize::try_from(index).ok()?)
    }

    fn pop_front(&mut self) -> Option<PendingEvent> {
        let event = self.events.pop_front()?;
        self.first_id += 1;
        Some(event)
    }

    /// Drops answered events at the front; returns the deadline of the first open one.
    fn next_deadline(&mut self) -> Option<Instant> {
        while self.events.front().is_some_and(|e| e.file.is_none()) {
            self.pop_front();
        }
        self.events.front().map(|e| e.deadline)
    }
}

struct Reader {
    group: Arc<FanotifyGroup>,
    cache: DecisionCache,
    pending: PendingQueue,
    jobs: SyncSender<Job>,
    outcomes: Receiver<Outcome>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    generation: u64,
    settings: EngineSettings,
    shared: Arc<Shared>,
}

impl Reader {
    fn run(mut self) {
        let mut buf = vec![0u8; READ_BUFFER];
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self
                .pending
                .next_deadline()
                .map_or(MAX_IDLE, |d| d.saturating_duration_since(Instant::now()))
                .min(MAX_IDLE);
            let (events_ready, woken) = poll_two(self.group.as_fd(), self.waker.as_fd(), timeout);
            if woken {
                self.waker.drain();
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            self.refresh_generation();
            self.take_outcomes();
            if events_ready {
                self.read_events(&mut buf);
            }
            self.expire();
        }
        // Dropping `self` closes the group and the job queue.
    }

    fn refresh_generation(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.generation = generation;
            self.cache.clear();
            let _ = self.group.flush_inode_marks();
        }
        self.shared
            .applied_generation
            .store(generation, Ordering::Release);
    }

    fn read_events(&mut self, buf: &mut [u8]) {
        for _ in 0..MAX_READS_PER_ROUND {
            let n = match self.group.read_events(buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "reading fanotify events failed");
                    return;
                }
            };
            for event in parse_events(&buf[..n]) {
                self.handle(event);
            }
        }
    }

    fn handle(&mut self, event: RawEvent) {
        let counters = &self.shared.counters;
        bump(&counters.events);
        if event.mask & libc::FAN_Q_OVERFLOW != 0 {
            bump(&counters.overflows);
            return;
        }
        let Some(file) = event.file else { return };
        let kind = if event.mask & libc::FAN_OPEN_EXEC_PERM != 0 {
            EventKind::Exec
        } else if event.mask & libc::FAN_OPEN_PERM != 0 {
            EventKind::Open
        } else {
            return;
        };
        if event.pid == self.settings.own_pid {
            bump(&counters.own_process);
            self.respond(&file, true);
            return;
        }
        // Only regular files can be programs or libraries; a file we cannot even stat
        // cannot be judged, and is left to the kernel's own checks.
        let stat = match fstat(file.as_fd()) {
            Ok(stat) if stat.is_regular() => stat,
            _ => {
                self.respond(&file, true);
                return;
            }
        };
        let key = FileKey::from(&stat);
        let known = self.cache.get(&key);
        let file = Arc::new(file);
        let restricting = self.settings.restricting;
        if let Some(verdict) = known
            .as_ref()
            .and_then(|k| verdict_for(kind, k, restricting))
        {
            bump(&counters.cache_hits);
            let trust = known.and_then(|k| k.trust);
            let (sha256, rule) = (trust.and_then(|t| t.sha256), trust.and_then(|t| t.rule));
            self.answer(file, event.pid, kind, verdict, sha256, rule, false, None);
            return;
        }
        bump(&counters.cache_misses);
        let deadline = Instant::now() + self.settings.deadline;
        let id = self.pending.push(PendingEvent {
            file: Some(file.clone()),
            pid: event.pid,
            kind,
            deadline,
        });
        let job = Job::Decide(DecideJob {
            id,
            file,
            pid: event.pid,
            kind,
            key,
            root_protected: stat.root_owned_and_protected(),
            known: known.unwrap_or_default(),
            deadline,
            generation: self.generation,
        });
        if self.jobs.try_send(job).is_err() {
            bump(&self.shared.counters.queue_full);
            if let Some(event) = self.pending.get_mut(id) {
                if let Some(file) = event.file.take() {
                    let (pid, kind) = (event.pid, event.kind);
                    self.answer(
                        file,
                        pid,
                        kind,
                        self.settings.answer_on_deadline,
                        None,
                        None,
                        true,
                        None,
                    );
                }
            }
        }
    }

    fn take_outcomes(&mut self) {
        while let Ok(outcome) = self.outcomes.try_recv() {
            let current = outcome.generation == self.generation;
            if current {
                self.cache.learn(outcome.key, outcome.learned);
            }
            let Some(event) = self.pending.get_mut(outcome.id) else {
                continue;
            };
            let Some(file) = event.file.take() else {
                continue; // already answered at its deadline
            };
            let (pid, kind) = (event.pid, event.kind);
            match outcome.verdict {
                Some(verdict) => {
                    let (sha256, rule) = (outcome.sha256, outcome.rule);
                    let process = outcome.process;
                    self.answer(
                        file.clone(),
                        pid,
                        kind,
                        verdict,
                        sha256,
                        rule,
                        false,
                        process,
                    );
                    if verdict == Verdict::Allow && current && outcome.ignore_mask != 0 {
                        self.ignore(&file, outcome.ignore_mask);
                    }
                }
                None => {
                    bump(&self.shared.counters.deadline_expired);
                    let default = self.settings.answer_on_deadline;
                    self.answer(file, pid, kind, default, None, None, true, None);
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(deadline) = self.pending.next_deadline() {
            if deadline > now {
                break;
            }
            let Some(event) = self.pending.pop_front() else {
                break;
            };
            if let Some(file) = event.file {
                bump(&self.shared.counters.deadline_expired);
                let default = self.settings.answer_on_deadline;
                self.answer(file, event.pid, event.kind, default, None, None, true, None);
            }
        }
    }

    fn respond(&self, file: &OwnedFd, allow: bool) {
        // ENOENT means the kernel no longer waits for this event (the process died).
        let _ = self.group.respond(file.as_raw_fd(), allow);
        let counter = if allow {
            &self.shared.counters.allowed
        } else {
            &self.shared.counters.denied
        };
        bump(counter);
    }

    /// Writes the answer, then (for a denial, or an audited exec) queues the record for
    /// a worker. Monitor mode softens the restriction only: a block still denies.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        file: Arc<OwnedFd>,
        pid: i32,
        kind: EventKind,
        verdict: Verdict,
        sha256: Option<Sha256Hash>,
        rule: Option<RuleHit>,
        by_deadline: bool,
        process: Option<ProcessSnapshot>,
    ) {
        let blocked = verdict == Verdict::Deny && rule == Some(RuleHit::Block);
        let monitor_only = !blocked && self.shared.monitor.load(Ordering::Relaxed);
        self.respond(&file, verdict == Verdict::Allow || monitor_only);
        let audited =
            verdict == Verdict::Allow && rule == Some(RuleHit::Audit) && kind == EventKind::Exec;
        if verdict == Verdict::Allow && !audited {
            return;
        }
        if verdict == Verdict::Deny && monitor_only {
            bump(&self.shared.counters.would_deny);
        }
        let record = Job::Record(RecordJob {
            file,
            pid,
            kind,
            sha256,
            rule: if blocked || audited { rule } else { None },
            monitor_only: monitor_only || audited,
            by_deadline,
            process,
        });
        if self.jobs.try_send(record).is_err() {
            self.shared.denials.count_dropped();
        }
    }

    fn ignore(&self, file: &OwnedFd, mask: u64) {
        if self.group.ignore_until_modified(file.as_fd(), mask).is_ok() {
            bump(&self.shared.counters.ignore_marks);
        }
    }
}

struct Worker {
    jobs: Arc<Mutex<Receiver<Job>>>,
    outcomes: Sender<Outcome>,
    waker: Arc<Waker>,
    trust: Arc<TrustSet>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    restricting: bool,
    #[cfg(test)]
    decision_delay: Duration,
}

impl Worker {
    fn run(self) {
        loop {
            let job = {
                let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            };
            if self.stop.load(Ordering::Relaxed) {
                continue; // the group is closing: the kernel answers for us
            }
            match job {
                Job::Decide(job) => {
                    let outcome = self.decide(&job);
                    if self.outcomes.send(outcome).is_ok() {
                        self.waker.wake();
                    }
                }
                Job::Record(job) => self.record(job),
            }
        }
    }

    fn decide(&self, job: &DecideJob) -> Outcome {
        #[cfg(test)]
        if !self.decision_delay.is_zero() {
            std::thread::sleep(self.decision_delay);
        }
        let file = job.file.as_fd();
        let mut known = job.known;
        let mut learned = Knowledge::default();
        let mut outcome = Outcome {
            id: job.id,
            key: job.key,
            verdict: None,
            learned,
            sha256: None,
            rule: None,
            ignore_mask: 0,
            generation: job.generation,
            process: None,
        };
        if job.kind == EventKind::Open && known.elf.is_none() {
            match is_elf(file) {
                Ok(elf) => {
                    known.elf = Some(elf);
                    learned.elf = Some(elf);
                }
                // The opener will hit the same read error; nothing to load from it.
                Err(_) => {
                    outcome.verdict = Some(Verdict::Allow);
                    return outcome;
                }
            }
        }
        if verdict_for(job.kind, &known, self.restricting).is_none() {
            let path = fd_path(file);
            match self
                .trust
                .check(file, job.key.size, path.as_deref(), job.deadline)
            {
                TrustOutcome::Decided {
                    reason,
                    sha256,
                    rule,
                    cacheable,
                } => {
                    let trust = Trust {
                        trusted: reason.is_some(),
                        sha256,
                        rule,
                    };
                    known.trust = Some(trust);
                    if cacheable {
                        learned.trust = Some(trust);
                    }
                }
                TrustOutcome::Undecided => {
                    outcome.learned = learned;
                    return outcome;
                }
            }
        }
        let verdict = verdict_for(job.kind, &known, self.restricting);
        outcome.verdict = verdict;
        outcome.learned = learned;
        outcome.sha256 = known.trust.and_then(|t| t.sha256);
        let rule = known.trust.and_then(|t| t.rule);
        outcome.rule = rule;
        // What will be recorded: read the process now, while the kernel holds it.
        let audited = verdict == Some(Verdict::Allow)
            && rule == Some(RuleHit::Audit)
            && job.kind == EventKind::Exec;
        if verdict == Some(Verdict::Deny) || audited {
            outcome.process = Some(ProcessSnapshot::take(job.pid.max(0) as u32));
        }
        if verdict == Some(Verdict::Allow) && job.root_protected {
            // Untrusted conclusions are never marked while restricting; a non-ELF file
            // only for opens (executing it as a script still needs trust). Audited
            // files never: every run is reported. Unrestricted, a hashed file that no
            // rule names is settled until it changes.
            outcome.ignore_mask = if rule == Some(RuleHit::Audit) {
                0
            } else if rule.is_none() && known.trust.is_some_and(|t| t.trusted || !self.restricting)
            {
                PERMISSION_MASK
            } else if known.elf == Some(false) {
                libc::FAN_OPEN_PERM
            } else {
                0
            };
        }
        outcome
    }

    fn record(&self, job: RecordJob) {
        let pid = job.pid.max(0) as u32;
        // Read by the worker that decided, while the kernel held the process; else now,
        // best effort: the process may have moved on.
        let process = job.process.unwrap_or_else(|| ProcessSnapshot::take(pid));
        let uid = process.uid;
        let rule = job
            .rule
            .and(job.sha256.as_ref())
            .and_then(|h| self.trust.rule_info(h));
        let record = DenialRecord {
            rule: job.rule.map(|hit| match hit {
                RuleHit::Block => RuleOutcome::Blocked,
                RuleHit::Audit => RuleOutcome::Audited,
            }),
            indicator_id: rule.as_ref().map(|(_, info)| info.indicator_id.clone()),
            alert: rule.as_ref().is_some_and(|(_, info)| info.generate_alert),
            path: fd_path(job.file.as_fd()),
            sha256: job.sha256.map(hex::encode),
            pid,
            uid,
            parent_program: process.program,
            command_line: process.command_line,
            // From the parsed /etc/passwd, never NSS: this must not wait on a network.
            user: uid.and_then(user_name),
            time: self.shared.clock.now(),
            access: match job.kind {
                EventKind::Exec => AccessKind::Exec,
                EventKind::Open => AccessKind::ElfOpen,
            },
            monitor_only: job.monitor_only,
            by_deadline: job.by_deadline,
        };
        tracing::info!(
            path = ?record.path,
            pid,
            access = ?record.access,
            monitor_only = record.monitor_only,
            by_deadline = record.by_deadline,
            rule = ?record.rule,
            indicator = ?record.indicator_id,
            "execution denied or audited"
        );
        self.shared.denials.push(record);
    }
}
