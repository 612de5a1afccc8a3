//! The interleaved exec rounds. Two kinds of session alternate, order rotating, each
//! started afresh and checked to enforce what it should:
//! - appfence restricting the "enforced" tmpfs, while the same programs also run from a
//!   second, unmarked tmpfs: the two alternate execution by execution (ABBA), so the
//!   no-enforcement baseline and appfence share every moment of the machine's noise;
//! - fapolicyd running (it watches every tmpfs mount, so nothing runs unwatched beside
//!   it), the programs run from the second tmpfs;
//! - appfence *unrestricted* with a blocklist (block rules only) on the "enforced"
//!   tmpfs, against the unmarked one, ABBA as for the restriction.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use appfence_agent::linux::{EnforcerStats, FanotifyEnforcer, Sha256Hash};
use appfence_agent::Enforcer;
use appfence_proto::agent::FileRule;

use crate::appfence::{self, PackageDb};
use crate::fapolicyd;
use crate::programs::Workload;
use crate::sandbox::Sandbox;

/// Untimed executions of each workload at the start of every session, so that the
/// "cached" runs measure the steady state.
pub const WARM_UP: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setting {
    NoEnforcement,
    Appfence,
    Fapolicyd,
    /// No agent, measured in the blocklist sessions (their own baseline).
    BlocklistBaseline,
    /// appfence unrestricted, with block rules only.
    Blocklist,
}

impl Setting {
    pub fn label(self) -> &'static str {
        match self {
            Setting::NoEnforcement => "no enforcement",
            Setting::Appfence => "appfence",
            Setting::Fapolicyd => "fapolicyd",
            Setting::BlocklistBaseline => "no enforcement (blocklist session)",
            Setting::Blocklist => "appfence unrestricted, blocklist",
        }
    }
}

/// Whether the files run are the same every time (decisions cached) or a fresh copy
/// before every execution (a new inode: every decision made for the first time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Cached,
    FirstTime,
}

pub type Key = (Setting, usize, Version);

/// One workload installed on both tmpfs mounts.
pub struct Pair {
    pub enforced: Workload,
    pub plain: Workload,
}

pub struct Bench<'a> {
    /// The tmpfs appfence marks.
    pub enforced: &'a Sandbox,
    pub workloads: &'a [Pair],
    pub allowlist: Vec<Sha256Hash>,
    /// Binaries no configuration trusts, one per tmpfs (enforced, plain).
    pub unknown: (PathBuf, PathBuf),
    pub fapolicyd: Option<&'a fapolicyd::Setup>,
    /// Block rules for the unrestricted session (none: no such session). They name the
    /// enforced tmpfs's unknown binary, so the session can prove it enforces.
    pub blocklist: Vec<FileRule>,
}

#[derive(Default)]
pub struct Results {
    pub latencies_ns: HashMap<Key, Vec<u64>>,
    pub appfence_stats: EnforcerStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Appfence,
    Fapolicyd,
    Blocklist,
}

enum Session {
    Appfence(FanotifyEnforcer),
    Fapolicyd(fapolicyd::Daemon),
    Blocklist(FanotifyEnforcer),
}

impl Bench<'_> {
    pub fn settings(&self) -> Vec<Setting> {
        let mut settings = vec![Setting::NoEnforcement, Setting::Appfence];
        if self.fapolicyd.is_some() {
            settings.push(Setting::Fapolicyd);
        }
        if !self.blocklist.is_empty() {
            settings.extend([Setting::BlocklistBaseline, Setting::Blocklist]);
        }
        settings
    }

    pub fn run(&self, rounds: usize, chunk: usize) -> Result<Results, String> {
        let mut results = Results::default();
        let mut kinds = vec![Kind::Appfence];
        if self.fapolicyd.is_some() {
            kinds.push(Kind::Fapolicyd);
        }
        if !self.blocklist.is_empty() {
            kinds.push(Kind::Blocklist);
        }
        let mut variants = Vec::new();
        for version in [Version::Cached, Version::FirstTime] {
            for workload in 0..self.workloads.len() {
                variants.push((workload, version));
            }
        }
        for round in 0..rounds {
            for &kind in rotated(&kinds, round).iter() {
                let started = Instant::now();
                let session = self.start(kind)?;
                for pair in self.workloads {
                    for _ in 0..WARM_UP {
                        run_once(&pair.plain, Version::Cached)?;
                        if kind != Kind::Fapolicyd {
                            run_once(&pair.enforced, Version::Cached)?;
                        }
                    }
                }
                for &(workload, version) in rotated(&variants, round).iter() {
                    let pair = &self.workloads[workload];
                    for i in 0..chunk {
                        match kind {
                            Kind::Appfence | Kind::Blocklist => {
                                let mut sides = if kind == Kind::Appfence {
                                    [
                                        (Setting::NoEnforcement, &pair.plain),
                                        (Setting::Appfence, &pair.enforced),
                                    ]
                                } else {
                                    [
                                        (Setting::BlocklistBaseline, &pair.plain),
                                        (Setting::Blocklist, &pair.enforced),
                                    ]
                                };
                                if i % 2 == 1 {
                                    sides.reverse();
                                }
                                for (setting, side) in sides {
                                    let ns = run_once(side, version)?;
                                    results.record((setting, workload, version), ns);
                                }
                            }
                            Kind::Fapolicyd => {
                                let ns = run_once(&pair.plain, version)?;
                                results.record((Setting::Fapolicyd, workload, version), ns);
                            }
                        }
                    }
                }
                if let Some(stats) = self.stop(session)? {
                    appfence::add_stats(&mut results.appfence_stats, &stats);
                }
                eprintln!(
                    "round {}/{rounds}: {kind:?} session done in {:.1} s",
                    round + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Ok(results)
    }

    fn start(&self, kind: Kind) -> Result<Session, String> {
        let (enforced_unknown, plain_unknown) = (&self.unknown.0, &self.unknown.1);
        match kind {
            Kind::Appfence => {
                let enforcer = appfence::enforcer(
                    self.enforced.root(),
                    self.allowlist.clone(),
                    PackageDb::None,
                );
                appfence::restrict(&enforcer)?;
                let session = Session::Appfence(enforcer);
                expect_refused(enforced_unknown, true, "appfence is restricting")?;
                expect_refused(plain_unknown, false, "the baseline tmpfs is unmarked")?;
                Ok(session)
            }
            Kind::Blocklist => {
                let enforcer =
                    appfence::enforcer(self.enforced.root(), Vec::new(), PackageDb::None);
                enforcer.set_file_rules(&self.blocklist, &[]);
                if enforcer.is_restricted() || !enforcer.is_watching() {
                    return Err("the blocklist session must watch without restricting".into());
                }
                let session = Session::Blocklist(enforcer);
                expect_refused(enforced_unknown, true, "its hash is blocked")?;
                expect_refused(plain_unknown, false, "the baseline tmpfs is unmarked")?;
                Ok(session)
            }
            Kind::Fapolicyd => {
                let setup = self.fapolicyd.expect("fapolicyd is prepared");
                let starting = Instant::now();
                let daemon = setup.start().map_err(|e| e.to_string())?;
                eprintln!(
                    "fapolicyd listening after {:.1} s",
                    starting.elapsed().as_secs_f64()
                );
                let session = Session::Fapolicyd(daemon);
                expect_refused(plain_unknown, true, "fapolicyd is running")?;
                Ok(session)
            }
        }
    }

    fn stop(&self, session: Session) -> Result<Option<EnforcerStats>, String> {
        let stats = match session {
            Session::Appfence(enforcer) => Some(appfence::lift(&enforcer)?),
            Session::Blocklist(enforcer) => {
                let stats = enforcer.stats();
                enforcer.set_file_rules(&[], &[]);
                if enforcer.is_watching() {
                    return Err("the blocklist session still watches without rules".into());
                }
                Some(stats)
            }
            Session::Fapolicyd(daemon) => {
                let took = daemon.stop().map_err(|e| e.to_string())?;
                eprintln!("fapolicyd stopped in {:.1} s", took.as_secs_f64());
                None
            }
        };
        expect_refused(&self.unknown.0, false, "enforcement is stopped")?;
        expect_refused(&self.unknown.1, false, "enforcement is stopped")?;
        Ok(stats)
    }
}

impl Results {
    fn record(&mut self, key: Key, ns: u64) {
        self.latencies_ns.entry(key).or_default().push(ns);
    }
}

/// Runs the untrusted binary (`/bin/false`, modified) and checks whether it was refused.
fn expect_refused(unknown: &PathBuf, refused: bool, because: &str) -> Result<(), String> {
    let outcome = Command::new(unknown)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let was_refused = match outcome {
        // It ran when it exits 1.
        Ok(status) if status.code() == Some(1) => false,
        Ok(status) => return Err(format!("{} ended with {status}", unknown.display())),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => true,
        Err(e) => return Err(format!("running {}: {e}", unknown.display())),
    };
    if was_refused == refused {
        Ok(())
    } else {
        Err(format!(
            "{} was {} although {because}",
            unknown.display(),
            if was_refused { "refused" } else { "allowed" }
        ))
    }
}

/// One execution (fork, exec, wait), timed; it must succeed. First-time: the files are
/// replaced by fresh copies first, untimed.
pub fn run_once(workload: &Workload, version: Version) -> Result<u64, String> {
    if version == Version::FirstTime {
        workload
            .refresh()
            .map_err(|e| format!("refreshing {}: {e}", workload.name))?;
    }
    let mut command = workload.command();
    let started = Instant::now();
    let status = command.status();
    let elapsed = started.elapsed();
    match status {
        Ok(s) if s.success() => Ok(elapsed.as_nanos() as u64),
        Ok(s) => Err(format!("{} ended with {s}", workload.name)),
        Err(e) => Err(format!("{} did not run: {e}", workload.name)),
    }
}

/// `items` rotated left by `by`: over as many rounds as items, each item runs in each
/// position once.
pub fn rotated<T: Clone>(items: &[T], by: usize) -> Vec<T> {
    let mut out = items.to_vec();
    if !out.is_empty() {
        let len = out.len();
        out.rotate_left(by % len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::rotated;

    #[test]
    fn rotation_puts_every_item_first_once() {
        let items = ["a", "b", "c"];
        let firsts: Vec<&str> = (0..3).map(|r| rotated(&items, r)[0]).collect();
        assert_eq!(firsts, ["a", "b", "c"]);
        assert_eq!(rotated(&items, 4), ["b", "c", "a"]);
        assert!(rotated::<u8>(&[], 1).is_empty());
    }
}
