//! The interleaved exec rounds: every configuration in every round, the order rotating,
//! each configuration started afresh per round and checked to be (or not be) enforcing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use appfence_agent::linux::{EnforcerStats, FanotifyEnforcer, Sha256Hash};

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
}

impl Setting {
    pub fn label(self) -> &'static str {
        match self {
            Setting::NoEnforcement => "no enforcement",
            Setting::Appfence => "appfence",
            Setting::Fapolicyd => "fapolicyd",
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

pub struct Bench<'a> {
    pub sandbox: &'a Sandbox,
    pub workloads: &'a [Workload],
    pub allowlist: Vec<Sha256Hash>,
    /// A binary no configuration trusts: must be refused while enforcing.
    pub unknown: PathBuf,
    pub fapolicyd: Option<&'a fapolicyd::Setup>,
}

#[derive(Default)]
pub struct Results {
    pub latencies_ns: HashMap<Key, Vec<u64>>,
    pub appfence_stats: EnforcerStats,
}

enum Session {
    NoEnforcement,
    Appfence(FanotifyEnforcer),
    Fapolicyd(fapolicyd::Daemon),
}

impl Bench<'_> {
    pub fn settings(&self) -> Vec<Setting> {
        let mut settings = vec![Setting::NoEnforcement, Setting::Appfence];
        if self.fapolicyd.is_some() {
            settings.push(Setting::Fapolicyd);
        }
        settings
    }

    pub fn run(&self, rounds: usize, chunk: usize) -> Result<Results, String> {
        let mut results = Results::default();
        let settings = self.settings();
        let mut variants = Vec::new();
        for version in [Version::Cached, Version::FirstTime] {
            for workload in 0..self.workloads.len() {
                variants.push((workload, version));
            }
        }
        for round in 0..rounds {
            for &setting in rotated(&settings, round).iter() {
                let started = Instant::now();
                let session = self.start(setting)?;
                for workload in self.workloads {
                    run_execs(workload, WARM_UP, Version::Cached)?;
                }
                for &(workload, version) in rotated(&variants, round).iter() {
                    let latencies = run_execs(&self.workloads[workload], chunk, version)?;
                    results
                        .latencies_ns
                        .entry((setting, workload, version))
                        .or_default()
                        .extend(latencies);
                }
                if let Some(stats) = self.stop(session)? {
                    appfence::add_stats(&mut results.appfence_stats, &stats);
                }
                eprintln!(
                    "round {}/{rounds}: {} done in {:.1} s",
                    round + 1,
                    setting.label(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Ok(results)
    }

    fn start(&self, setting: Setting) -> Result<Session, String> {
        let session = match setting {
            Setting::NoEnforcement => Session::NoEnforcement,
            Setting::Appfence => {
                let enforcer = appfence::enforcer(
                    self.sandbox.root(),
                    self.allowlist.clone(),
                    PackageDb::None,
                );
                appfence::restrict(&enforcer)?;
                Session::Appfence(enforcer)
            }
            Setting::Fapolicyd => {
                let setup = self.fapolicyd.expect("fapolicyd is prepared");
                Session::Fapolicyd(setup.start().map_err(|e| e.to_string())?)
            }
        };
        // Proof that the configuration is in force (or that nothing is).
        let refused = self.unknown_is_refused()?;
        match (&session, refused) {
            (Session::NoEnforcement, false) => {}
            (Session::NoEnforcement, true) => {
                return Err("an unknown binary is refused with no enforcement running".into())
            }
            (_, true) => {}
            (_, false) => {
                return Err(format!(
                    "{} is running but the unknown binary still runs",
                    setting.label()
                ))
            }
        }
        Ok(session)
    }

    fn stop(&self, session: Session) -> Result<Option<EnforcerStats>, String> {
        let stats = match session {
            Session::NoEnforcement => None,
            Session::Appfence(enforcer) => Some(appfence::lift(&enforcer)?),
            Session::Fapolicyd(daemon) => {
                daemon.stop().map_err(|e| e.to_string())?;
                None
            }
        };
        if self.unknown_is_refused()? {
            return Err("the unknown binary is still refused after stopping".into());
        }
        Ok(stats)
    }

    fn unknown_is_refused(&self) -> Result<bool, String> {
        match Command::new(&self.unknown)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            // /bin/false, modified: it runs when it exits 1.
            Ok(status) if status.code() == Some(1) => Ok(false),
            Ok(status) => Err(format!("the unknown binary ended with {status}")),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
                Ok(true)
            }
            Err(e) => Err(format!("running the unknown binary: {e}")),
        }
    }
}

/// `count` executions (fork, exec, wait), each timed; every one must succeed.
pub fn run_execs(workload: &Workload, count: usize, version: Version) -> Result<Vec<u64>, String> {
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
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
            Ok(s) if s.success() => latencies.push(elapsed.as_nanos() as u64),
            Ok(s) => return Err(format!("{} ended with {s}", workload.name)),
            Err(e) => return Err(format!("{} did not run: {e}", workload.name)),
        }
    }
    Ok(latencies)
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
