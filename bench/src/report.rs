//! The Markdown report: where and how the figures were measured, the figures, and the
//! ratios against their targets.

use std::fmt::Write;
use std::process::Command;
use std::time::Duration;

use appfence_proto::Timestamp;

use crate::args::Options;
use crate::stats::{Sample, Summary};

/// Both ratios must reach this share of their baseline.
pub const TARGET: f64 = 0.50;

pub struct Environment {
    pub command: String,
    pub date_utc: String,
    pub nproc: usize,
    pub cpu: String,
    pub commit: String,
}

impl Environment {
    pub fn detect(args: &[String]) -> Environment {
        let mut command = String::from("cargo run --release -p appfence-bench");
        if !args.is_empty() {
            command.push_str(" -- ");
            command.push_str(&args.join(" "));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Environment {
            command,
            date_utc: Timestamp::from_unix_seconds(now).to_string(),
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu: cpu_model().unwrap_or_else(|| "unknown CPU".into()),
            commit: git_commit().unwrap_or_else(|| "unknown (not a git checkout)".into()),
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The short commit, marked when tracked files differ from it.
fn git_commit() -> Option<String> {
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{head} (with uncommitted changes)")
    } else {
        head
    })
}

pub struct Figures<'a> {
    pub enroll: &'a Sample,
    pub create_http: &'a Sample,
    pub create_store: &'a Sample,
    pub raw_insert: &'a Sample,
    pub raw_tx: &'a Sample,
    pub get_action: &'a Sample,
    pub healthz: &'a Sample,
    pub store_read: &'a Sample,
    pub token_check: &'a Sample,
    pub sqlite_pragmas: &'a str,
    pub total: Duration,
}

pub fn render(env: &Environment, o: &Options, f: &Figures) -> String {
    let c = o.concurrency;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## appfence control-plane benchmark{}\n",
        if o.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(s, "- command: `{}`", env.command);
    let _ = writeln!(s, "- date (UTC): {}", env.date_utc);
    let _ = writeln!(s, "- machine: nproc = {}, {}", env.nproc, env.cpu);
    let _ = writeln!(s, "- commit: {}", env.commit);
    let _ = writeln!(
        s,
        "- load: {c} concurrent client tasks, one keep-alive HTTP/1.1 client, one access token; \
         server, client and SQLite in one process on loopback"
    );
    let _ = writeln!(
        s,
        "- creation: {} devices per method, {} interleaved rounds; reads: {} interleaved rounds of {:.1} s per kind",
        o.devices,
        o.creation_rounds,
        o.read_rounds,
        o.read_round.as_secs_f64()
    );
    let _ = writeln!(s, "- SQLite (baseline connection): {}", f.sqlite_pragmas);
    let _ = writeln!(
        s,
        "- wall time of the whole run: {:.1} s\n",
        f.total.as_secs_f64()
    );

    let _ = writeln!(s, "| measurement | ops | ops/s | p50 ms | p99 ms |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    let rows: [(String, &Sample); 9] = [
        (
            format!("`POST /api/machines/{{id}}/restrictCodeExecution` ({c} clients)"),
            f.create_http,
        ),
        (
            format!("`Store::create_action` direct, no HTTP ({c} tasks)"),
            f.create_store,
        ),
        (
            "raw `INSERT INTO actions`, 1 connection, autocommit (baseline)".into(),
            f.raw_insert,
        ),
        (
            "raw `BEGIN IMMEDIATE`; action + audit rows; `COMMIT`, 1 connection".into(),
            f.raw_tx,
        ),
        (
            format!("`GET /api/machineactions/{{id}}` ({c} clients)"),
            f.get_action,
        ),
        (format!("`GET /healthz` ({c} clients, baseline)"), f.healthz),
        (
            format!("`Store::action` direct, no HTTP ({c} tasks)"),
            f.store_read,
        ),
        (
            "token check of the API extractor, no HTTP (1 task)".into(),
            f.token_check,
        ),
        (
            format!("`POST /agent/v1/enroll` (setup, {c} clients)"),
            f.enroll,
        ),
    ];
    for (name, sample) in rows {
        let _ = writeln!(s, "{}", row(&name, &sample.summary()));
    }

    let _ = writeln!(s, "\n| ratio | measured | target | verdict |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    let ratio = |a: &Sample, b: &Sample| a.per_second() / b.per_second();
    let target = format!("≥ {:.0}%", TARGET * 100.0);
    for (name, r, t) in [
        (
            "action creation / raw insert",
            ratio(f.create_http, f.raw_insert),
            Some(TARGET),
        ),
        (
            "GET machine action / GET /healthz",
            ratio(f.get_action, f.healthz),
            Some(TARGET),
        ),
        (
            "raw action + audit transaction / raw insert (informative)",
            ratio(f.raw_tx, f.raw_insert),
            None,
        ),
        (
            "`Store::create_action` / raw insert (informative)",
            ratio(f.create_store, f.raw_insert),
            None,
        ),
        (
            "action creation / `Store::create_action` (informative)",
            ratio(f.create_http, f.create_store),
            None,
        ),
        (
            "GET machine action / `Store::action` (informative)",
            ratio(f.get_action, f.store_read),
            None,
        ),
    ] {
        let (target, verdict) = match t {
            Some(t) if r >= t => (target.as_str(), "met"),
            Some(_) => (target.as_str(), "**missed**"),
            None => ("", ""),
        };
        // One decimal: 49.6% must not read as a met 50%.
        let _ = writeln!(s, "| {name} | {:.1}% | {target} | {verdict} |", r * 100.0);
    }
    s
}

fn row(name: &str, m: &Summary) -> String {
    format!(
        "| {name} | {} | {:.0} | {:.2} | {:.2} |",
        m.count,
        m.per_second,
        ms(m.p50),
        ms(m.p99)
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, latency_ms: u64, secs: u64) -> Sample {
        Sample {
            latencies_ns: vec![latency_ms * 1_000_000; n],
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_report_shows_rates_and_judges_ratios_against_the_target() {
        let env = Environment {
            command: "cargo run --release -p appfence-bench".into(),
            date_utc: "2025-01-01T00:00:00Z".into(),
            nproc: 2,
            cpu: "test cpu".into(),
            commit: "abc1234".into(),
        };
        let o = Options::parse(&[]).unwrap().unwrap();
        let (http, store, raw) = (sample(600, 20, 1), sample(800, 15, 1), sample(1000, 1, 1));
        let raw_tx = sample(900, 1, 1);
        let (get, health, enroll) = (sample(400, 4, 1), sample(1000, 2, 1), sample(10, 5, 1));
        let (read, token) = (sample(2000, 1, 1), sample(5000, 0, 1));
        let text = render(
            &env,
            &o,
            &Figures {
                enroll: &enroll,
                create_http: &http,
                create_store: &store,
                raw_insert: &raw,
                raw_tx: &raw_tx,
                get_action: &get,
                healthz: &health,
                store_read: &read,
                token_check: &token,
                sqlite_pragmas: "journal_mode=wal",
                total: Duration::from_secs(3),
            },
        );
        assert!(text.contains("nproc = 2"), "{text}");
        assert!(text.contains("abc1234"));
        assert!(text.contains("| 600 | 600 | 20.00 | 20.00 |"), "{text}");
        assert!(
            text.contains("| action creation / raw insert | 60.0% | ≥ 50% | met |"),
            "{text}"
        );
        assert!(
            text.contains("| GET machine action / GET /healthz | 40.0% | ≥ 50% | **missed** |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| action creation / `Store::create_action` (informative) | 75.0% |  |  |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| GET machine action / `Store::action` (informative) | 20.0% |  |  |"),
            "{text}"
        );
    }
}
