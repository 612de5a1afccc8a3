//! `agent`: the Linux agent. Enrols this host, then runs the command loop with the
//! fanotify enforcer until SIGTERM or SIGINT.
//!
//! On a clean stop the enforcer lets go of its fanotify group (the kernel then allows
//! everything, as it would after a crash) and restores `vm.memfd_noexec`; the recorded
//! state makes the next start re-apply the restriction before the server is reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use appfence_agent::enforcer::{DisabledAtBoot, Enforcer};
use appfence_agent::linux::{host, DeadlineAnswer, FanotifyConfig, FanotifyEnforcer};
use appfence_agent::state::StateDir;
use appfence_agent::AgentConfig;
use appfence_core::SystemClock;
use tokio::sync::watch;

use super::Ctx;
use crate::args::{AgentArgs, OnDeadline};
use crate::config::DEFAULT_LOG_LEVEL;
use crate::duration::parse_duration;
use crate::env::Env;
use crate::error::CliError;
use crate::parse::parse_log_level;

pub const ENV_SERVER: &str = "APPFENCE_SERVER";
pub const ENV_ENROLL_SECRET: &str = "APPFENCE_ENROLL_SECRET";
pub const ENV_STATE_DIR: &str = "APPFENCE_STATE_DIR";
pub const ENV_ONLY_MOUNTS: &str = "APPFENCE_ONLY_MOUNTS";
pub const ENV_TAGS: &str = "APPFENCE_TAGS";
pub const ENV_DECISION_DEADLINE: &str = "APPFENCE_DECISION_DEADLINE";
pub const ENV_ON_DEADLINE: &str = "APPFENCE_ON_DEADLINE";
pub const ENV_LOG_LEVEL: &str = "APPFENCE_LOG_LEVEL";

pub const DEFAULT_STATE_DIR: &str = "/var/lib/appfence-agent";
pub const DEFAULT_DECISION_DEADLINE: Duration = Duration::from_secs(2);

/// Everything `agent` needs, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSettings {
    pub server: String,
    pub enroll_secret: Option<String>,
    pub state_dir: PathBuf,
    /// `None`: every local filesystem, and new ones.
    pub only_mounts: Option<Vec<PathBuf>>,
    pub tags: Vec<String>,
    pub decision_deadline: Duration,
    pub answer_on_deadline: DeadlineAnswer,
    pub log_level: String,
    pub tls: appfence_tls::client::ClientTls,
}

/// Flag, else environment variable (parsed, the error naming the variable).
fn layer<T>(
    flag: Option<T>,
    env: &Env,
    var: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, CliError> {
    if flag.is_some() {
        return Ok(flag);
    }
    env.get(var)
        .map(|raw| parse(raw).map_err(|e| CliError::Usage(format!("invalid {var}={raw:?}: {e}"))))
        .transpose()
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_on_deadline(s: &str) -> Result<OnDeadline, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "allow" => Ok(OnDeadline::Allow),
        "deny" => Ok(OnDeadline::Deny),
        _ => Err("expected allow or deny".into()),
    }
}

pub fn resolve(args: &AgentArgs, env: &Env) -> Result<AgentSettings, CliError> {
    let server = layer(args.server.clone(), env, ENV_SERVER, |s| {
        Ok(s.trim().to_string())
    })?
    .ok_or_else(|| {
        CliError::Usage(format!(
            "the server URL is required: --server URL or {ENV_SERVER}"
        ))
    })?;
    let tls = crate::tls_client::resolve(&args.tls, env)?;
    tls.check_server_url(&server).map_err(CliError::Usage)?;
    let enroll_secret = layer(args.enroll_secret.clone(), env, ENV_ENROLL_SECRET, |s| {
        Ok(s.trim().to_string())
    })?;
    let state_dir = layer(args.state_dir.clone(), env, ENV_STATE_DIR, |s| {
        Ok(PathBuf::from(s))
    })?
    .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let flag_mounts = (!args.only_mounts.is_empty()).then(|| args.only_mounts.clone());
    let only_mounts = layer(flag_mounts, env, ENV_ONLY_MOUNTS, |s| {
        Ok(comma_list(s).into_iter().map(PathBuf::from).collect())
    })?;
    let flag_tags = (!args.tags.is_empty()).then(|| args.tags.clone());
    let tags = layer(flag_tags, env, ENV_TAGS, |s| Ok(comma_list(s)))?.unwrap_or_default();
    let decision_deadline = layer(
        args.decision_deadline,
        env,
        ENV_DECISION_DEADLINE,
        parse_duration,
    )?
    .unwrap_or(DEFAULT_DECISION_DEADLINE);
    if decision_deadline.is_zero() {
        return Err(CliError::Usage(
            "the decision deadline must be longer than zero".into(),
        ));
    }
    let answer_on_deadline = match layer(args.on_deadline, env, ENV_ON_DEADLINE, parse_on_deadline)?
    {
        Some(OnDeadline::Deny) => DeadlineAnswer::Deny,
        Some(OnDeadline::Allow) | None => DeadlineAnswer::Allow,
    };
    let log_level = layer(args.log_level.clone(), env, ENV_LOG_LEVEL, parse_log_level)?
        .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
    Ok(AgentSettings {
        tls,
        server,
        enroll_secret,
        state_dir,
        only_mounts,
        tags,
        decision_deadline,
        answer_on_deadline,
        log_level,
    })
}

/// The effective user id, from `/proc/self/status` (second field of `Uid:`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub async fn run(args: &AgentArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let settings = resolve(args, ctx.env)?;
    if effective_uid() != Some(0) {
        return Err(CliError::Failed(
            "appfence agent must run as root: fanotify permission events need CAP_SYS_ADMIN \
             (run it from the systemd unit, or with sudo)"
                .into(),
        ));
    }
    // Held to the end: what is queued is written before the process exits.
    let _log = init_logging(&settings.log_level);
    // Before the (possibly long) start, so that a signal during it is not lost.
    let shutdown_signal = super::serve::shutdown_signal()?;

    let state = StateDir::new(&settings.state_dir);
    let fanotify = Arc::new(FanotifyEnforcer::new(
        FanotifyConfig {
            only_mounts: settings.only_mounts.clone(),
            deadline: settings.decision_deadline,
            answer_on_deadline: settings.answer_on_deadline,
            memfd_saved: Some(state.memfd_saved_path()),
            ..FanotifyConfig::default()
        },
        Arc::new(SystemClock),
    ));
    fanotify.recover_memfd_noexec();
    let capabilities = fanotify.capabilities();
    if !capabilities.can_restrict_execution {
        tracing::warn!(
            ?capabilities,
            "this kernel cannot restrict execution (fanotify exec permission events and filesystem marks are needed, Linux 5.0 or later)"
        );
    }
    let enforcer: Arc<dyn Enforcer> = if host::disabled_at_boot() {
        tracing::warn!(
            "{} is on the kernel command line: starting WITHOUT enforcement; restrict actions will fail",
            host::BOOT_ESCAPE
        );
        Arc::new(DisabledAtBoot(fanotify.clone()))
    } else {
        fanotify.clone()
    };

    let hostname = host::hostname().ok_or_else(|| {
        CliError::Failed("cannot read the host name from /proc/sys/kernel/hostname".into())
    })?;
    let info = host::device_info(enforcer.capabilities(), settings.tags.clone());
    let mut config = AgentConfig::new(&settings.server, &settings.state_dir, hostname, info);
    config.enroll_secret = settings.enroll_secret.clone();
    config.tls = settings.tls.clone();
    tracing::info!(
        server = %settings.server,
        state_dir = %settings.state_dir.display(),
        coverage = ?settings.only_mounts,
        "appfence agent starting"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut signalled = std::pin::pin!(shutdown_signal);
    let mut agent = std::pin::pin!(appfence_agent::run(config, enforcer.clone(), stop_rx));
    let outcome = tokio::select! {
        _ = &mut signalled => {
            tracing::info!("signal received; stopping");
            let _ = stop_tx.send(true);
            agent.await
        }
        outcome = &mut agent => outcome,
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "the agent loop stopped");
        if enforcer.is_restricted() {
            // The host stays protected by what was recorded until someone stops us.
            tracing::error!("keeping the restriction in force until the agent is stopped");
            signalled.await;
        }
    }
    release(fanotify).await;
    outcome
        .map(|()| ExitCode::SUCCESS)
        .map_err(|e| CliError::Failed(e.to_string()))
}

/// Lets go of the fanotify group and restores `vm.memfd_noexec`; the record on disk
/// still says restricted, so the next start re-applies.
async fn release(fanotify: Arc<FanotifyEnforcer>) {
    if !fanotify.is_restricted() {
        return;
    }
    tracing::info!("releasing enforcement until the next start re-applies it");
    let released = tokio::task::spawn_blocking(move || fanotify.apply_blocking(false)).await;
    match released {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "releasing enforcement"),
        Err(e) => tracing::warn!(error = %e, "releasing enforcement"),
    }
}

/// Logs to stderr through a queue that never blocks (`log_writer`) (colours only on a terminal: journald keeps the rest); a second
/// initialisation (tests) is ignored.
fn init_logging(filter: &str) -> crate::log_writer::FlushOnDrop {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_LEVEL));
    let (log, flush) = crate::log_writer::LossyLog::start(std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .try_init();
    flush
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(argv: &[&str]) -> AgentArgs {
        match crate::Cli::try_parse_from(argv).unwrap().command {
            crate::args::Command::Agent(a) => a,
            _ => panic!("not agent"),
        }
    }

    #[test]
    fn flags_win_over_the_environment_and_defaults_fill_the_rest() {
        let env = Env::from_pairs([
            (ENV_SERVER, "https://env:1"),
            (ENV_ENROLL_SECRET, "from-env"),
            (ENV_ONLY_MOUNTS, "/srv, /data"),
            (ENV_TAGS, "web,prod"),
            (ENV_ON_DEADLINE, "deny"),
        ]);
        let s = resolve(
            &parse(&[
                "appfence",
                "agent",
                "--server",
                "https://flag:2",
                "--only-mount",
                "/mnt/x",
                "--decision-deadline",
                "500ms",
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(s.server, "https://flag:2");
        assert_eq!(s.enroll_secret.as_deref(), Some("from-env"));
        assert_eq!(s.only_mounts, Some(vec![PathBuf::from("/mnt/x")]));
        assert_eq!(s.tags, vec!["web", "prod"]);
        assert_eq!(s.decision_deadline, Duration::from_millis(500));
        assert_eq!(s.answer_on_deadline, DeadlineAnswer::Deny);
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(s.log_level, "info");

        let env = Env::from_pairs([(ENV_SERVER, "https://env:1"), (ENV_STATE_DIR, "/x")]);
        let s = resolve(&parse(&["appfence", "agent"]), &env).unwrap();
        assert_eq!(s.only_mounts, None, "every filesystem by default");
        assert_eq!(s.answer_on_deadline, DeadlineAnswer::Allow);
        assert_eq!(s.decision_deadline, DEFAULT_DECISION_DEADLINE);
        assert_eq!(s.state_dir, PathBuf::from("/x"));
    }

    #[test]
    fn missing_or_bad_settings_are_usage_errors() {
        let none = Env::default();
        let e = resolve(&parse(&["appfence", "agent"]), &none).unwrap_err();
        assert!(matches!(e, CliError::Usage(m) if m.contains("--server")));
        let bad = Env::from_pairs([(ENV_SERVER, "https://h:1"), (ENV_ON_DEADLINE, "maybe")]);
        let e = resolve(&parse(&["appfence", "agent"]), &bad).unwrap_err();
        assert!(matches!(e, CliError::Usage(m) if m.contains(ENV_ON_DEADLINE)));
        assert!(crate::Cli::try_parse_from(["appfence", "agent", "--on-deadline", "x"]).is_err());
    }
}
