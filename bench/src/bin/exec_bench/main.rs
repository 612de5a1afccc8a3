//! appfence's execution-overhead benchmark (Linux, root): N executions of `/bin/true`
//! and of a dynamically linked program with several libraries, with no enforcement,
//! with appfence restricting (cached and first-time) and with fapolicyd, in interleaved
//! rounds of one run; and the time `FanotifyEnforcer::apply` takes to put enforcement
//! in force. Prints a Markdown report; progress goes to stderr.
//!
//! The process re-runs itself as a child inside a private mount and PID namespace under
//! `timeout -s KILL`; the child mounts a private tmpfs, marks only that, and everything
//! it started (fanotify groups, fapolicyd) dies with it.

mod appfence;
mod args;
mod fapolicyd;
mod measure;
mod programs;
mod report;
mod sandbox;
mod stats;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use appfence_agent::linux::{probe_capabilities, Sha256Hash};
use sha2::Digest;

use crate::appfence::PackageDb;
use crate::args::{Options, USAGE};
use crate::measure::{rotated, Bench, Pair};
use crate::report::{ApplyResults, Context};
use crate::sandbox::{install, is_root, Sandbox};

/// Set in the namespace child.
const CHILD_ENV: &str = "APPFENCE_EXEC_BENCH_CHILD";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let options = match Options::parse(&argv) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = if std::env::var_os(CHILD_ENV).is_some() {
        in_namespace(&options, &argv)
    } else {
        spawn_namespace(&options, &argv)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exec_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The host side: checks what is needed, then runs the child in its namespace.
fn spawn_namespace(options: &Options, argv: &[String]) -> Result<(), String> {
    if !is_root() {
        return Err("run as root (fanotify permission events and namespaces need it)".into());
    }
    if !probe_capabilities().can_restrict_execution {
        return Err(
            "this kernel does not offer fanotify exec permission events and filesystem marks"
                .into(),
        );
    }
    if options.fapolicyd {
        if let Some(why) = fapolicyd::unavailable() {
            eprintln!("fapolicyd will not be measured: {why}");
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let status = Command::new("timeout")
        .args(["-s", "KILL", &options.time_limit.as_secs().to_string()])
        .args(["unshare", "-m", "-p", "-f", "--kill-child", "--mount-proc"])
        .args(["--propagation", "private"])
        .arg(exe)
        .args(argv)
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run timeout/unshare: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the namespace child failed: {status} (SIGKILL means the {} s limit)",
            options.time_limit.as_secs()
        ))
    }
}

/// The child, PID 1 of its own namespaces.
fn in_namespace(options: &Options, argv: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let load_before = load_average();
    // Two tmpfs mounts with the same programs: appfence marks the first only.
    let enforced = Sandbox::new("enforced").map_err(|e| e.to_string())?;
    let plain = Sandbox::new("plain").map_err(|e| e.to_string())?;
    let dynamic = programs::build_dynamic(&enforced.path("build"))
        .map_err(|e| format!("building the dynamic program: {e}"))?;
    let mut workloads = Vec::new();
    for kind in ["true", "dynamic"] {
        let install = |sandbox: &Sandbox| match kind {
            "true" => programs::true_program(sandbox),
            _ => programs::dynamic_program(sandbox, &dynamic),
        };
        workloads.push(Pair {
            enforced: install(&enforced).map_err(|e| format!("preparing {kind}: {e}"))?,
            plain: install(&plain).map_err(|e| format!("preparing {kind}: {e}"))?,
        });
    }
    let unknown = (unknown_binary(&enforced)?, unknown_binary(&plain)?);
    let trusted: Vec<PathBuf> = workloads
        .iter()
        .flat_map(|w| {
            w.plain
                .files
                .iter()
                .flat_map(|(p, t)| [p.clone(), t.clone()])
        })
        .collect();
    let allowlist = allowlist(&workloads)?;

    let mut fapolicyd_version = Err("not asked for (--no-fapolicyd)".to_string());
    let mut fapolicyd_setup = None;
    if options.fapolicyd {
        match fapolicyd::unavailable() {
            Some(why) => fapolicyd_version = Err(why),
            None => {
                let mount_id = plain.mount_id().map_err(|e| e.to_string())?;
                let setup = fapolicyd::prepare(&trusted, &options.fapolicyd_integrity, mount_id)
                    .map_err(|e| format!("preparing fapolicyd: {e}"))?;
                fapolicyd_setup = Some(setup);
                fapolicyd_version = Ok(package_version("fapolicyd"));
            }
        }
    }

    let blocklist = blocklist(&unknown.0)?;
    let bench = Bench {
        enforced: &enforced,
        workloads: &workloads,
        allowlist,
        unknown,
        fapolicyd: fapolicyd_setup.as_ref(),
        blocklist,
    };
    eprintln!(
        "{} executions per measurement in {} rounds; configurations: {:?}",
        options.execs,
        options.rounds,
        bench.settings()
    );
    let results = bench.run(options.rounds, options.chunk())?;

    let mut apply = ApplyResults {
        timings: Vec::new(),
    };
    for round in 0..options.apply_rounds {
        for packages in rotated(&[PackageDb::None, PackageDb::Host], round) {
            let timing = appfence::time_apply(enforced.root(), packages)?;
            eprintln!(
                "apply round {}/{} ({packages:?}): {:.1} ms",
                round + 1,
                options.apply_rounds,
                timing.apply.as_secs_f64() * 1e3
            );
            apply.timings.push((packages, timing));
        }
    }

    let mut command = "cargo run --release -p appfence-bench --bin exec_bench".to_string();
    if !argv.is_empty() {
        command.push_str(" -- ");
        command.push_str(&argv.join(" "));
    }
    let context = Context {
        command,
        date: output_of("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        commit: output_of("git", &["rev-parse", "--short", "HEAD"]),
        machine: machine(),
        load_before,
        load_after: load_average(),
        execs: options.chunk() * options.rounds,
        rounds: options.rounds,
        chunk: options.chunk(),
        fapolicyd: fapolicyd_version,
        fapolicyd_integrity: options.fapolicyd_integrity.clone(),
        wall_time: started.elapsed(),
    };
    let text = report::render(&context, &workloads, &results, &apply);
    let mut stdout = std::io::stdout();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing the report: {e}"))
}

/// `/bin/false` with bytes appended: trusted by nobody.
fn unknown_binary(sandbox: &Sandbox) -> Result<PathBuf, String> {
    let path = sandbox.path("bin/unknown");
    install(std::path::Path::new("/bin/false"), &path).map_err(|e| e.to_string())?;
    let mut content = std::fs::read(&path).map_err(|e| e.to_string())?;
    content.extend_from_slice(b"appfence-exec-bench: not trusted");
    std::fs::write(&path, content).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(path)
}

/// Hashes in the blocklist session: a tenant-sized list of other files' hashes.
pub const BLOCKLIST_SIZE: usize = 10_000;

/// [`BLOCKLIST_SIZE`] random-looking hashes (SHA-256 of counters) plus the hash of
/// `unknown`, which the session must refuse.
fn blocklist(unknown: &std::path::Path) -> Result<Vec<appfence_proto::agent::FileRule>, String> {
    let rule = |hash: [u8; 32], n: usize| appfence_proto::agent::FileRule {
        sha256: hex::encode(hash),
        action: "Block".into(),
        indicator_id: n.to_string(),
        generate_alert: false,
        expires: None,
    };
    let mut rules: Vec<_> = (0..BLOCKLIST_SIZE)
        .map(|n| rule(sha2::Sha256::digest(format!("exec-bench {n}")).into(), n))
        .collect();
    let bytes = std::fs::read(unknown).map_err(|e| e.to_string())?;
    rules.push(rule(sha2::Sha256::digest(&bytes).into(), BLOCKLIST_SIZE));
    Ok(rules)
}

/// The SHA-256 of every workload file: appfence's allowlist.
fn allowlist(workloads: &[Pair]) -> Result<Vec<Sha256Hash>, String> {
    let mut hashes = Vec::new();
    for pair in workloads {
        for (pristine, _) in &pair.enforced.files {
            let bytes = std::fs::read(pristine).map_err(|e| e.to_string())?;
            hashes.push(sha2::Sha256::digest(&bytes).into());
        }
    }
    hashes.sort_unstable();
    hashes.dedup();
    Ok(hashes)
}

fn output_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn package_version(package: &str) -> String {
    output_of("dpkg-query", &["-W", "-f", "${Version}", package])
}

/// The first three fields of `/proc/loadavg`: other tenants of a shared machine show here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "nproc = {}, {cpu}, Linux {}",
        output_of("nproc", &[]),
        output_of("uname", &["-r"])
    )
}
