//! `serve`: the control plane on its store (SQLite in the data directory, or PostgreSQL),
//! optionally with a demo tenant and simulated devices, until Ctrl-C or SIGTERM.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use appfence_agent::{spawn_fleet_on, AgentError, SimTimings};
use appfence_core::SystemClock;
use appfence_server::access::AccessSpec;
use appfence_server::demo::{self, DemoInfo};
use appfence_server::{AppState, RunningServer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Ctx;
use crate::args::ServeArgs;
use crate::config::{self, ServeSettings};
use crate::error::CliError;
use crate::store::OpenStore;

/// How long in-flight requests (device long-polls included) may take to finish once a
/// shutdown is asked for; after that the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long simulated devices get to stop.
const FLEET_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: &ServeArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let settings = config::resolve_serve(args, ctx.env)?;
    // Held to the end: what is queued is written before the process exits.
    let _log = init_logging(&settings.log_level, settings.log_format);
    // Listen for signals before the (possibly long) start-up, so that a Ctrl-C during it
    // is neither lost nor fatal.
    let mut shutdown = std::pin::pin!(shutdown_signal()?);
    // SIGHUP's default action ends the process: take it over before anything else.
    let hangups = reload_signal()?;
    let demo = settings.demo;
    let serving = tokio::select! {
        r = start(settings) => r?,
        _ = &mut shutdown => {
            tracing::info!("interrupted during start-up");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut banner = format!(
        "appfence listening on {} (public URL {}), data in {}\n",
        serving.local_addr(),
        serving.public_url(),
        serving.state().config.data_dir.display()
    );
    if let Some(addr) = serving.metrics_addr() {
        banner.push_str(&format!("metrics at http://{addr}/metrics\n"));
    }
    if let Some(demo) = serving.demo() {
        banner.push('\n');
        banner.push_str(&demo.walkthrough());
    }
    banner.push_str("\nPress Ctrl-C to stop.\n");
    ctx.out.write_all(banner.as_bytes())?;
    ctx.out.flush()?;
    let reloader = tokio::spawn(reload_on_hangup(
        hangups,
        serving.state().clone(),
        args.clone(),
        ctx.env.clone(),
        demo,
    ));
    let result = serving.run_until(shutdown).await;
    reloader.abort();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// A started server, with its demo fleet if any.
pub struct Serving {
    running: RunningServer,
    store: OpenStore,
    demo: Option<DemoInfo>,
    fleet: Vec<JoinHandle<Result<(), AgentError>>>,
    fleet_stop: watch::Sender<bool>,
}

/// Opens the store, starts the server and, with `demo`, provisions the demo tenant and
/// waits for the simulated devices to enrol (so `demo.json` lists them).
pub async fn start(mut settings: ServeSettings) -> Result<Serving, CliError> {
    settings.server.access = with_demo_roles(settings.server.access, settings.demo);
    let store = OpenStore::open(&settings.server, settings.database_url.as_ref()).await?;
    let running = match appfence_server::start(
        settings.server.clone(),
        store.shared(),
        Arc::new(SystemClock),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            store.close().await;
            return Err(CliError::Failed(e));
        }
    };
    let (fleet_stop, fleet_rx) = watch::channel(false);
    let mut serving = Serving {
        running,
        store,
        demo: None,
        fleet: Vec::new(),
        fleet_stop,
    };
    if settings.demo {
        if let Err(e) = serving
            .start_demo(
                settings.demo_devices as usize,
                settings.demo_step_delay,
                fleet_rx,
            )
            .await
        {
            // Leave nothing running behind the error.
            let _ = serving.stop().await;
            return Err(e);
        }
    }
    Ok(serving)
}

impl Serving {
    async fn start_demo(
        &mut self,
        devices: usize,
        step_delay: Duration,
        fleet_rx: watch::Receiver<bool>,
    ) -> Result<(), CliError> {
        let state = self.running.state.clone();
        let mut info = demo::provision(&state).await.map_err(CliError::Failed)?;
        // Over HTTPS, the devices trust exactly this server's certificate.
        let http = match state.tls.get() {
            None => None,
            Some(cert) => Some(
                reqwest::Client::builder()
                    .use_preconfigured_tls(appfence_tls::client::own_server_config(cert.clone()))
                    .build()
                    .map_err(|e| {
                        CliError::Failed(format!("cannot build the demo fleet's HTTP client: {e}"))
                    })?,
            ),
        };
        self.fleet = spawn_fleet_on(
            http,
            &self.base_url(),
            info.enroll_secret.expose(),
            1..=devices,
            &state.config.data_dir.join("demo-devices"),
            SimTimings {
                ack_delay: step_delay,
                complete_delay: step_delay,
                denial_when_restricted: true,
            },
            fleet_rx,
        );
        // Enrolment is a few requests per device; allow for large fleets.
        let timeout = Duration::from_secs(30) + Duration::from_millis(20) * devices as u32;
        demo::record_devices(&state, &mut info, devices, timeout)
            .await
            .map_err(CliError::Failed)?;
        self.demo = Some(info);
        Ok(())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.running.local_addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.running.metrics_addr
    }

    /// A URL this process can reach the server at: the listening address, with a
    /// wildcard address (0.0.0.0, ::) replaced by loopback.
    pub fn base_url(&self) -> String {
        let mut addr = self.running.local_addr;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            _ => {}
        }
        format!("{}://{addr}", self.running.state.config.scheme())
    }

    pub fn public_url(&self) -> String {
        self.running.state.public_url()
    }

    pub fn state(&self) -> &AppState {
        &self.running.state
    }

    /// The demo credentials (also in `DATA_DIR/demo.json`), when started with `demo`.
    pub fn demo(&self) -> Option<&DemoInfo> {
        self.demo.as_ref()
    }

    /// Serves until `shutdown` completes (or the server fails), then stops cleanly.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), CliError> {
        let Serving {
            running,
            store,
            fleet,
            fleet_stop,
            ..
        } = self;
        let stop_server = running.shutdown_signal();
        let mut server = std::pin::pin!(running.wait());
        let ended_early = tokio::select! {
            r = &mut server => Some(r),
            _ = shutdown => None,
        };
        if ended_early.is_none() {
            tracing::info!("shutting down");
        }
        stop_fleet(fleet_stop, fleet).await;
        let result = match ended_early {
            Some(Ok(())) => Err(CliError::Failed("the server stopped unexpectedly".into())),
            Some(Err(e)) => Err(CliError::Failed(format!("the server failed: {e}"))),
            None => {
                let _ = stop_server.send(true);
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(CliError::Failed(format!(
                        "the server failed while stopping: {e}"
                    ))),
                    Err(_) => {
                        tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still in flight at shutdown were dropped");
                        Ok(())
                    }
                }
            }
        };
        store.close().await;
        result
    }

    /// Stops at once (tests, and failed start-ups).
    pub async fn stop(self) -> Result<(), CliError> {
        self.run_until(std::future::ready(())).await
    }
}

async fn stop_fleet(stop: watch::Sender<bool>, fleet: Vec<JoinHandle<Result<(), AgentError>>>) {
    let _ = stop.send(true);
    let deadline = tokio::time::Instant::now() + FLEET_GRACE;
    for handle in fleet {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "a simulated device stopped with an error")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "a simulated device task failed"),
            Err(_) => abort.abort(),
        }
    }
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed
/// when this is called, not when the future is first polled.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| CliError::Failed(format!("cannot handle {name}: {e}")))
    };
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

fn reload_signal() -> Result<tokio::signal::unix::Signal, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).map_err(|e| CliError::Failed(format!("cannot handle SIGHUP: {e}")))
}

/// On every SIGHUP: the TLS certificate, then the settings that apply without a
/// restart, resolved as at start (flags, environment, config file): access (issuers,
/// roles, device groups), `agent_mode` and the rate limits. Settings that do not
/// resolve or validate are refused with the reason, and those in force stay.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    state: AppState,
    args: ServeArgs,
    env: crate::env::Env,
    demo: bool,
) {
    while hangups.recv().await.is_some() {
        match state.reload_tls() {
            Ok(Some(loaded)) => tracing::info!(%loaded, "TLS certificate reloaded"),
            Ok(None) => {}
            Err(e) => tracing::error!(
                "TLS certificate reload refused, the certificate in force stays: {e}"
            ),
        }
        match reload_settings(&state, &args, &env, demo).await {
            Ok((s, changed)) => tracing::info!(
                issuers = s.issuers,
                roles = s.roles,
                device_groups = s.device_groups,
                machines_regrouped = s.machines_regrouped,
                changed = %if changed.is_empty() { "nothing else".to_string() } else { changed.join(", ") },
                "configuration reloaded"
            ),
            Err(e) => tracing::error!(
                "configuration reload refused, the previous configuration stays in force: {e}"
            ),
        }
    }
}

/// Resolves the settings again and applies those that need no restart; says what
/// changed besides access. Listen address, data directory, database and TLS files need
/// a restart.
pub async fn reload_settings(
    state: &AppState,
    args: &ServeArgs,
    env: &crate::env::Env,
    demo: bool,
) -> Result<(appfence_server::state::ReloadSummary, Vec<String>), String> {
    let settings = config::resolve_serve(args, env).map_err(|e| e.to_string())?;
    let spec = with_demo_roles(settings.server.access.clone(), demo);
    let summary = state.reload_access(&spec).await?;
    let changed = state.reload_runtime(settings.server.agent_mode, settings.server.rate_limits);
    Ok((summary, changed))
}

/// With `--demo`, the demo analyst's and viewer's roles are part of every access spec.
fn with_demo_roles(mut spec: AccessSpec, demo: bool) -> AccessSpec {
    if demo {
        spec.roles.extend(demo::demo_roles());
    }
    spec
}

/// Logs to stderr through a queue that never blocks (`log_writer`); a second initialisation (tests) is ignored.
fn init_logging(filter: &str, format: crate::args::LogFormat) -> crate::log_writer::FlushOnDrop {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config::DEFAULT_LOG_LEVEL));
    // PostgreSQL's notices ("relation ... already exists, skipping" at every start) are
    // not news, unless asked for by name.
    let filter = if filter.to_string().contains("sqlx") {
        filter
    } else {
        // Nor is sqlx's "slow acquire" warning, one per request while thousands of
        // devices enrol at once: the storage-fault episodes say what matters.
        filter
            .add_directive(
                "sqlx::postgres::notice=warn"
                    .parse()
                    .expect("a valid directive"),
            )
            .add_directive(
                "sqlx::pool::acquire=error"
                    .parse()
                    .expect("a valid directive"),
            )
    };
    let (log, flush) = crate::log_writer::LossyLog::start(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log)
        .log_internal_errors(false);
    let _ = match format {
        crate::args::LogFormat::Text => builder.try_init(),
        // One object a line: `fields` (the message, the error `target` GUID), and the
        // request span's (its `request_id`).
        crate::args::LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    flush
}
