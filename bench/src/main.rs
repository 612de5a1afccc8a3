//! The control-plane benchmark: one program, one run, figures measured side by side.
//!
//! Everything runs on loopback in this process: a real server over a fresh SQLite file
//! in a temporary directory, and a closed-loop load generator. Each figure is paired with
//! a baseline measured in the same run, interleaved with it, because on a shared, noisy
//! machine absolute numbers drift while ratios hold. Progress goes to stderr, the
//! Markdown report to stdout.
//!
//! `cargo run --release -p appfence-bench -- [--quick]`

use appfence_bench::{access, args, creation, idp, raw_sqlite, reads, report, setup, stats};

use std::process::ExitCode;
use std::time::{Duration, Instant};

use appfence_core::{Clock, SystemClock};
use appfence_store::Store;

use args::{Options, USAGE};
use raw_sqlite::RawSqlite;
use report::{Environment, Figures};
use setup::{machine_record, Harness};

/// The run stops by itself even if something hangs.
const RUN_LIMIT: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match Options::parse(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let env = Environment::detect(&args);
    match tokio::time::timeout(RUN_LIMIT, run(&options)).await {
        Ok(Ok((measured, total))) => {
            println!(
                "{}",
                report::render(&env, &options, &measured.figures(total))
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("benchmark stopped: it ran longer than {RUN_LIMIT:?}");
            ExitCode::FAILURE
        }
    }
}

/// Everything measured, owned until the report is rendered.
struct Measured {
    enroll: stats::Sample,
    creation: creation::Creation,
    reads: reads::Reads,
    access: access::Access,
    pragmas: String,
}

impl Measured {
    fn figures(&self, total: Duration) -> Figures<'_> {
        Figures {
            enroll: &self.enroll,
            create_http: &self.creation.http,
            create_store: &self.creation.store,
            raw_insert: &self.creation.raw,
            raw_tx: &self.creation.raw_tx,
            get_action: &self.reads.get_action,
            healthz: &self.reads.healthz,
            store_read: &self.reads.store_read,
            token_check: &self.reads.token_check,
            access: &self.access,
            sqlite_pragmas: &self.pragmas,
            total,
        }
    }
}

async fn run(o: &Options) -> Result<(Measured, Duration), String> {
    let started = Instant::now();
    let tmp = match &o.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    eprintln!("databases in {}", tmp.path().display());

    let idp = idp::Idp::start().await?;
    let h = Harness::start(tmp.path(), o.concurrency, idp.access_spec()).await?;
    eprintln!(
        "server at {}; enrolling {} devices over HTTP",
        h.base, o.devices
    );
    let (http_devices, enroll) = h.enroll_devices(o.devices, o.concurrency).await?;

    eprintln!(
        "adding {} devices to the store and {} to the baseline database",
        o.devices,
        2 * o.devices
    );
    let now = SystemClock.now();
    let mut store_devices = Vec::with_capacity(o.devices);
    for i in 0..o.devices {
        let m = machine_record(&h.tenant.id, "bench-store", i, now);
        h.store
            .insert_machine(&m)
            .await
            .map_err(|e| format!("cannot add a device: {e}"))?;
        store_devices.push(m);
    }
    // Two raw ways (plain insert, store-shaped transaction), a device per row each.
    let mut raw = RawSqlite::prepare(
        &tmp.path().join("baseline.db"),
        &h.tenant,
        &h.requestor,
        2 * o.devices,
    )
    .await?;

    reads::warm_up(&h, o.concurrency).await?;
    eprintln!("measuring action creation ({} rounds)", o.creation_rounds);
    let creation = creation::run(
        &h,
        &mut raw,
        &http_devices,
        &store_devices,
        o.creation_rounds,
        o.concurrency,
    )
    .await?;
    eprintln!(
        "measuring GET /api/machineactions/{{id}}, GET /healthz and their parts ({} rounds of {:?})",
        o.read_rounds, o.read_round
    );
    let reads = reads::run(
        &h,
        &creation.action_ids,
        o.read_rounds,
        o.read_round,
        o.concurrency,
    )
    .await?;

    eprintln!(
        "measuring the API gate against GET /api/machineactions/{{id}} on 1 client ({} rounds of {:?})",
        o.access_rounds, o.access_round
    );
    let user_token = idp.user_token(SystemClock.now().unix_seconds())?;
    let access = access::run(
        &h,
        &format!("Bearer {user_token}"),
        &creation.action_ids,
        o.access_rounds,
        o.access_round,
    )
    .await?;

    let pragmas = raw.pragmas.clone();
    raw.close().await?;
    h.shutdown().await?;
    Ok((
        Measured {
            enroll,
            creation,
            reads,
            access,
            pragmas,
        },
        started.elapsed(),
    ))
}
