//! The Markdown report.

use std::fmt::Write;
use std::time::Duration;

use appfence_agent::linux::EnforcerStats;

use crate::appfence::{ApplyTiming, PackageDb};
use crate::measure::{Pair, Results, Setting, Version};
use crate::stats::{summarise, Summary};

pub struct Context {
    pub command: String,
    pub date: String,
    pub commit: String,
    pub machine: String,
    pub load_before: String,
    pub load_after: String,
    pub execs: usize,
    pub rounds: usize,
    pub chunk: usize,
    pub fapolicyd: Result<String, String>,
    pub fapolicyd_integrity: String,
    pub wall_time: Duration,
}

pub struct ApplyResults {
    pub timings: Vec<(PackageDb, ApplyTiming)>,
}

/// Allowed, cached execution under appfence against no enforcement: at most +5%.
const CACHED_OVERHEAD_TARGET: f64 = 1.05;
/// Command received to enforcement active.
const APPLY_TARGET: Duration = Duration::from_secs(1);

pub fn render(
    context: &Context,
    workloads: &[Pair],
    results: &Results,
    apply: &ApplyResults,
) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "## Execution overhead (Linux agent)\n");
    let _ = writeln!(w, "- command: `{}`", context.command);
    let _ = writeln!(w, "- date (UTC): {}", context.date);
    let _ = writeln!(w, "- commit: {}", context.commit);
    let _ = writeln!(w, "- machine: {}", context.machine);
    let _ = writeln!(
        w,
        "- load average (1, 5, 15 min) at start: {}; at end: {}",
        context.load_before, context.load_after
    );
    let _ = writeln!(
        w,
        "- isolation: one private mount + PID namespace (`unshare -m -p -f --mount-proc --propagation private`, under `timeout -s KILL`); the programs are installed on two private tmpfs mounts, appfence marks only the first (`only_mounts`), the no-enforcement baseline and fapolicyd run them from the second"
    );
    for (i, pair) in workloads.iter().enumerate() {
        let _ = writeln!(w, "- workload {}: {}", letter(i), pair.enforced.description);
    }
    let _ = writeln!(
        w,
        "- executions: {} per measurement (fork + exec + wait through `std::process::Command`, wall clock per execution), in {} rounds of {}; each round runs an appfence session and a fapolicyd session (order rotating), each started afresh, proven to refuse an unknown binary (and appfence's to let it run from the unmarked tmpfs), warmed up with {} untimed runs of each workload, then the four variants (order rotating). In the appfence session the baseline and appfence alternate execution by execution (ABBA), so they see the same noise; fapolicyd watches every tmpfs, so it has sessions of its own",
        context.execs, context.rounds, context.chunk, crate::measure::WARM_UP
    );
    let _ = writeln!(
        w,
        "- cached: the same files every time; first-time: every file of the workload replaced by a fresh copy (new inode, same content) before each execution, untimed"
    );
    match &context.fapolicyd {
        Ok(version) => {
            let _ = writeln!(
                w,
                "- fapolicyd {version}, `integrity = {}`, `watch_fs = tmpfs`, mount marks inside the namespace, trust file listing the workload files",
                context.fapolicyd_integrity
            );
        }
        Err(why) => {
            let _ = writeln!(w, "- fapolicyd: not measured: {why}");
        }
    }
    let _ = writeln!(
        w,
        "- wall time of the whole run: {:.1} s\n",
        context.wall_time.as_secs_f64()
    );

    let settings = [
        Setting::NoEnforcement,
        Setting::Appfence,
        Setting::Fapolicyd,
        Setting::BlocklistBaseline,
        Setting::Blocklist,
    ];
    let get = |setting, workload, version| {
        results
            .latencies_ns
            .get(&(setting, workload, version))
            .and_then(|l| summarise(l))
    };
    let _ = writeln!(
        w,
        "| configuration | workload | variant | execs | mean µs | p50 µs | p99 µs | mean vs none | p50 vs none |"
    );
    let _ = writeln!(w, "|---|---|---|---:|---:|---:|---:|---:|---:|");
    for version in [Version::Cached, Version::FirstTime] {
        for (i, pair) in workloads.iter().enumerate() {
            for setting in settings {
                let Some(s) = get(setting, i, version) else {
                    continue;
                };
                // Each session kind against the baseline measured beside it.
                let baseline = match setting {
                    Setting::Blocklist => get(Setting::BlocklistBaseline, i, version),
                    _ => get(Setting::NoEnforcement, i, version),
                };
                let (vs_mean, vs_p50) = match (setting, baseline) {
                    (Setting::NoEnforcement | Setting::BlocklistBaseline, _) | (_, None) => {
                        (String::new(), String::new())
                    }
                    (_, Some(b)) => (ratio(s.mean, b.mean), ratio(s.p50, b.p50)),
                };
                let _ = writeln!(
                    w,
                    "| {} | {} {} | {} | {} | {} | {} | {} | {vs_mean} | {vs_p50} |",
                    setting.label(),
                    letter(i),
                    pair.enforced.name,
                    version_label(version),
                    s.count,
                    micros(s.mean),
                    micros(s.p50),
                    micros(s.p99),
                );
            }
        }
    }

    let _ = writeln!(
        w,
        "\nVerdicts use the medians: on this shared machine the means carry other tenants' load spikes (see p99), which hit every configuration alike but not in equal numbers.\n"
    );
    let _ = writeln!(
        w,
        "| ratio | of medians (p50) | of means | target | verdict |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---|");
    let row =
        |w: &mut String, label: String, x: Summary, y: Summary, target: &str, met: Option<bool>| {
            let _ = writeln!(
                w,
                "| {label} | {} | {} | {target} | {} |",
                ratio(x.p50, y.p50),
                ratio(x.mean, y.mean),
                met.map(verdict).unwrap_or("")
            );
        };
    for (i, _) in workloads.iter().enumerate() {
        let none = get(Setting::NoEnforcement, i, Version::Cached);
        let app = get(Setting::Appfence, i, Version::Cached);
        let fap = get(Setting::Fapolicyd, i, Version::Cached);
        if let (Some(n), Some(a)) = (none, app) {
            let r = a.p50.as_secs_f64() / n.p50.as_secs_f64();
            let label = format!("appfence cached / no enforcement, workload {}", letter(i));
            row(w, label, a, n, "≤ 1.05", Some(r <= CACHED_OVERHEAD_TARGET));
        }
        if let (Some(a), Some(f)) = (app, fap) {
            let r = a.p50.as_secs_f64() / f.p50.as_secs_f64();
            let label = format!("appfence cached / fapolicyd cached, workload {}", letter(i));
            row(w, label, a, f, "< 1", Some(r < 1.0));
        }
    }
    for (i, _) in workloads.iter().enumerate() {
        for version in [Version::Cached, Version::FirstTime] {
            let none = get(Setting::BlocklistBaseline, i, version);
            let blocklist = get(Setting::Blocklist, i, version);
            if let (Some(n), Some(b)) = (none, blocklist) {
                let r = b.p50.as_secs_f64() / n.p50.as_secs_f64();
                let label = format!(
                    "appfence unrestricted with {} block hashes, {} / no enforcement, workload {}",
                    crate::BLOCKLIST_SIZE + 1,
                    version_label(version),
                    letter(i)
                );
                match version {
                    Version::Cached => {
                        row(w, label, b, n, "≤ 1.05", Some(r <= CACHED_OVERHEAD_TARGET))
                    }
                    Version::FirstTime => row(w, label + " (informative)", b, n, "", None),
                }
            }
        }
    }
    for (i, _) in workloads.iter().enumerate() {
        let none = get(Setting::NoEnforcement, i, Version::FirstTime);
        let app = get(Setting::Appfence, i, Version::FirstTime);
        let fap = get(Setting::Fapolicyd, i, Version::FirstTime);
        if let (Some(n), Some(a)) = (none, app) {
            let label = format!(
                "appfence first-time / no enforcement, workload {} (informative)",
                letter(i)
            );
            row(w, label, a, n, "", None);
        }
        if let (Some(a), Some(f)) = (app, fap) {
            let label = format!(
                "appfence first-time / fapolicyd first-time, workload {} (informative)",
                letter(i)
            );
            row(w, label, a, f, "", None);
        }
    }

    render_stats(w, &results.appfence_stats);
    render_apply(w, apply);
    out
}

fn render_stats(w: &mut String, s: &EnforcerStats) {
    let _ = writeln!(
        w,
        "\nappfence's decision loop over all its sessions: {} events, {} allowed, {} denied (the proofs of enforcement), {} cache hits, {} cache misses (hashed), {} inode ignore marks added, {} answered at the deadline, {} refused for a full queue, {} kernel queue overflows.",
        s.events,
        s.allowed,
        s.denied,
        s.cache_hits,
        s.cache_misses,
        s.ignore_marks,
        s.deadline_expired,
        s.queue_full,
        s.overflows
    );
}

fn render_apply(w: &mut String, apply: &ApplyResults) {
    let _ = writeln!(w, "\n### Command received → enforcement active\n");
    let _ = writeln!(
        w,
        "The whole `FanotifyEnforcer::apply_blocking(true)` of a fresh enforcer (fanotify group, filesystem mark on the tmpfs, package database, the agent's own SHA-256, decision loop, `vm.memfd_noexec`), rounds interleaved; then `apply_blocking(false)`, timed apart.\n"
    );
    let _ = writeln!(
        w,
        "| package database | rounds | apply mean ms | apply min ms | apply max ms | lift mean ms | enforcer's report |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---|");
    let mut worst = Duration::ZERO;
    for packages in [PackageDb::None, PackageDb::Host] {
        let timings: Vec<&ApplyTiming> = apply
            .timings
            .iter()
            .filter(|(p, _)| *p == packages)
            .map(|(_, t)| t)
            .collect();
        let Some(apply_s) = summary_of(timings.iter().map(|t| t.apply)) else {
            continue;
        };
        let lift_s = summary_of(timings.iter().map(|t| t.lift)).expect("same rounds");
        let min = timings.iter().map(|t| t.apply).min().unwrap_or_default();
        let max = timings.iter().map(|t| t.apply).max().unwrap_or_default();
        worst = worst.max(max);
        let label = match packages {
            PackageDb::None => "none (`only_mounts` = the tmpfs, allowlist only)",
            PackageDb::Host => "this host's dpkg database (`/var/lib/dpkg/info`)",
        };
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            timings.len(),
            millis(apply_s.mean),
            millis(min),
            millis(max),
            millis(lift_s.mean),
            timings.last().map(|t| t.detail.as_str()).unwrap_or("")
        );
    }
    let _ = writeln!(
        w,
        "\n| target | measured (slowest round) | target | verdict |"
    );
    let _ = writeln!(w, "|---|---:|---:|---|");
    let _ = writeln!(
        w,
        "| command received → enforcement active | {} ms | ≤ 1000 ms | {} |",
        millis(worst),
        verdict(worst <= APPLY_TARGET)
    );
}

fn summary_of(durations: impl Iterator<Item = Duration>) -> Option<Summary> {
    let ns: Vec<u64> = durations.map(|d| d.as_nanos() as u64).collect();
    summarise(&ns)
}

fn letter(i: usize) -> char {
    (b'a' + i as u8) as char
}

fn version_label(version: Version) -> &'static str {
    match version {
        Version::Cached => "cached",
        Version::FirstTime => "first-time",
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// `x / y` as a factor and a percentage, e.g. `1.021 (+2.1%)`.
fn ratio(x: Duration, y: Duration) -> String {
    let r = x.as_secs_f64() / y.as_secs_f64();
    format!("{r:.3} ({:+.1}%)", (r - 1.0) * 100.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_units() {
        let ms = Duration::from_millis;
        assert_eq!(ratio(ms(102), ms(100)), "1.020 (+2.0%)");
        assert_eq!(ratio(ms(50), ms(100)), "0.500 (-50.0%)");
        assert_eq!(micros(Duration::from_nanos(1_234_567)), "1234.6");
        assert_eq!(millis(Duration::from_micros(2_500)), "2.5");
        assert_eq!((letter(0), letter(1)), ('a', 'b'));
    }
}
