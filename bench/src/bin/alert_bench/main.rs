//! What raising alerts costs the agent gateway's event ingest, side by side in one run:
//! one device posts batches of 500 events to a real server (SQLite in a temporary
//! directory, loopback) in three kinds, interleaved round by round so that noise on
//! this shared machine hits each alike:
//!
//! - `monitor`: would-be denials in monitor mode, which raise no alert (the baseline:
//!   the events are stored as before alerts existed);
//! - `same file`: 500 denials of one file, folded into one alert (one look-up and one
//!   update per batch, the flood case);
//! - `new files`: 500 denials of 500 files never seen, 500 new alerts per batch (the
//!   worst case: each a look-up, the tenant's newest creation time and an insert).
//!
//! Reports the median and p90 time per batch, events a second, and each kind's ratio to
//! the baseline. Markdown on stdout, progress on stderr.
//!
//! `bench/alert-bench.sh [--rounds N]`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use appfence_bench::harness;
use appfence_bench::setup::Harness;
use appfence_core::{Clock, SystemClock};
use serde_json::{json, Value};

const USAGE: &str = "alert_bench [--rounds N]
  --rounds N   batches of each kind (default 40)";
const BATCH: usize = 500;
const RUN_LIMIT: Duration = Duration::from_secs(900);

struct Options {
    rounds: usize,
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options { rounds: 40 };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--rounds" => {
                o.rounds = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--rounds takes a positive number")?
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(Some(o))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Monitor,
    SameFile,
    NewFiles,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Monitor => "monitor (no alert)",
            Kind::SameFile => "same file (1 alert, grouped)",
            Kind::NewFiles => "new files (500 new alerts)",
        }
    }
}

fn batch(kind: Kind, round: usize) -> Value {
    let now = SystemClock.now();
    let events: Vec<Value> = (0..BATCH)
        .map(|i| {
            let file = match kind {
                Kind::SameFile => 0,
                _ => round * BATCH + i + 1,
            };
            json!({
                "time": now,
                "path": format!("/tmp/bench/f{file}"),
                "sha256": format!("{file:064x}"),
                "pid": 4242,
                "uid": 1000,
                "parent": "/usr/bin/bash",
                "kind": "exec",
                "monitor": kind == Kind::Monitor,
                "commandLine": "bash -c ./payload",
                "user": "bench",
            })
        })
        .collect();
    json!({ "events": events })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(o: Options) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let h = Harness::start(dir.path(), 1, Default::default()).await?;
    let (_, credential) = h.enroll_device(0).await?;
    let url = format!("{}/agent/v1/events", h.base);
    let kinds = [Kind::Monitor, Kind::SameFile, Kind::NewFiles];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    for round in 0..o.rounds {
        for k in 0..kinds.len() {
            // Rotate which kind goes first.
            let k = (k + round) % kinds.len();
            let body = batch(kinds[k], round);
            let t = Instant::now();
            let resp = h
                .http
                .post(&url)
                .bearer_auth(&credential)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("events: {e}"))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                return Err(format!("events answered {status}: {text}"));
            }
            times[k].push(t.elapsed());
        }
        eprint!("\rround {}/{}", round + 1, o.rounds);
    }
    eprintln!();
    let alerts = h
        .http
        .get(format!("{}/api/alerts?$count=true&$top=1", h.base))
        .header("Authorization", &h.authorization)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json::<Value>()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = format!(
        "| kind | batches | median per batch | p90 | events/s (median) | median ratio to monitor |\n|---|---|---|---|---|---|\n"
    );
    let mut base = None;
    for (k, kind) in kinds.iter().enumerate() {
        let mut v = times[k].clone();
        v.sort();
        let median = percentile(&v, 0.5);
        let base_median = *base.get_or_insert(median);
        out.push_str(&format!(
            "| {} | {} | {:.1} ms | {:.1} ms | {:.0} | {:.2} |\n",
            kind.name(),
            v.len(),
            median.as_secs_f64() * 1e3,
            percentile(&v, 0.9).as_secs_f64() * 1e3,
            BATCH as f64 / median.as_secs_f64(),
            median.as_secs_f64() / base_median.as_secs_f64(),
        ));
    }
    out.push_str(&format!(
        "\nAlerts stored at the end (`$count`; the application lacks the alert roles when this is null): {}\n",
        alerts["@odata.count"]
    ));
    h.shutdown().await?;
    Ok(out)
}

#[tokio::main]
async fn main() -> ExitCode {
    let (o, _) = match harness::options(USAGE, parse) {
        Ok(v) => v,
        Err(code) => return code,
    };
    harness::report_within("alert_bench", RUN_LIMIT, run(o)).await
}
