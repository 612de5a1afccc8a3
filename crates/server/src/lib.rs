//! The appfence control plane: the MDE-compatible public API (`/api`, `/api/v1.0`), the
//! built-in OAuth 2.0 authorization server, the agent gateway (`/agent/v1`), dispatch of
//! actions to waiting devices, and the sweeper that times out stale actions.

pub mod access;
pub mod agent_gateway;
pub mod api;
pub mod at_rest;
pub mod client_address;
pub mod commands;
pub mod config;
pub mod connections;
pub mod console;
pub mod demo;
pub mod disk_space;
pub mod dispatch;
pub mod envelope_guard;
pub mod error;
pub mod listener;
pub mod metrics_endpoint;
pub mod oauth;
pub mod ratelimit;
pub mod response;
pub mod router;
pub mod state;
pub mod storage_health;
pub mod sweeper;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_support;
pub mod watchers;

pub use config::ServerConfig;
pub use error::ApiError;
pub use state::AppState;

use std::net::SocketAddr;
use std::sync::Arc;

use appfence_core::Clock;
use appfence_store::Store;
use tokio::sync::watch;

/// A server that is listening; dropping the handle does not stop it, `shutdown` does.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// The base URL clients use, e.g. `http://127.0.0.1:8080` (`https://` with TLS).
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.state.config.scheme(), self.local_addr)
    }

    /// Stops accepting requests, lets in-flight ones finish, and waits.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.map_err(std::io::Error::other)?
    }

    /// Waits until the server stops (it stops only on `shutdown` or an I/O error).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }

    pub fn shutdown_signal(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Binds the listener, prepares signing keys, starts the sweeper and serves.
pub async fn start(
    config: ServerConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow_free::Result<RunningServer> {
    config.check_transport()?;
    let open_files = connections::raise_open_file_limit();
    if open_files > 0 && (open_files as usize) < config.connection_limits.max_connections + 256 {
        tracing::warn!(
            open_files,
            max_connections = config.connection_limits.max_connections,
            "the open-file limit is below the connection cap: connections beyond it fail to be accepted"
        );
    }
    let tls = match &config.tls {
        Some(files) => {
            let now = clock.now().to_offset_date_time();
            let (cert, loaded) = appfence_tls::server::ReloadableCert::load(
                files.clone(),
                now,
                config.allow_group_read,
            )?;
            tracing::info!(cert = %files.cert.display(), %loaded, "serving HTTPS");
            Some(Arc::new(cert))
        }
        None => {
            if !config.listen.ip().is_loopback() {
                tracing::warn!(listen = %config.listen, "serving plain HTTP off loopback (--insecure-http): only behind a TLS-terminating proxy");
            }
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut config = config;
    if config.public_url.is_none() {
        config.public_url = Some(format!("{}://{local_addr}", config.scheme()));
    }
    let metrics_listen = config.metrics_listen;
    let state = AppState::new(config, store, clock).await?;
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let metrics_addr = match metrics_listen {
        Some(addr) => Some(metrics_endpoint::start(addr, shutdown.subscribe()).await?),
        None => None,
    };
    sweeper::spawn(state.clone(), shutdown.subscribe());
    sweeper::spawn_key_refresh(state.clone(), shutdown.subscribe());
    spawn_change_listener(&state, shutdown.subscribe());
    let app = router::build(state.clone());
    let limits = state.config.connection_limits;
    let watchers = state.watchers.clone();
    let stopped = async move {
        let _ = shutdown_rx.wait_for(|stop| *stop).await.map(|_| ());
        watchers.stop();
    };
    let task = match &tls {
        None => tokio::spawn(connections::serve(
            listener::PlainListener::new(listener),
            app,
            limits,
            stopped,
        )),
        Some(cert) => {
            let config = Arc::new(cert.server_config()?);
            let listener =
                listener::TlsListener::start(listener, config).map_err(|e| e.to_string())?;
            tokio::spawn(connections::serve(listener, app, limits, stopped))
        }
    };
    state.set_tls(tls);
    tracing::info!(%local_addr, "appfence control plane listening");
    Ok(RunningServer {
        local_addr,
        metrics_addr,
        state,
        shutdown,
        task,
    })
}

/// Acts on changes other replicas publish through the store (when it is shared).
fn spawn_change_listener(state: &AppState, mut shutdown: watch::Receiver<bool>) {
    let Some(mut changes) = state.store.subscribe() else {
        return;
    };
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) => state.apply_change(&change),
                    // Missed some: act as if everything changed.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        state.apply_change(&appfence_store::Change::Everything)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
    });
}

/// Errors at start-up are reported as text: they end the process with a message.
pub mod anyhow_free {
    pub type Result<T> = std::result::Result<T, String>;
}
