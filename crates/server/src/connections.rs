//! The connection loop: what `axum::serve` does, plus what a server facing hostile
//! clients needs and axum does not configure.
//!
//! - A **header-read timeout** (hyper's, which needs a timer): a connection that has not
//!   sent a whole request head within [`ConnectionLimits::header_read`] is closed. It also
//!   bounds an idle keep-alive connection (waiting for the next head is reading a head).
//!   A long-poll is not affected: its head was read; it waits for its own deadline.
//! - A **cap on open connections**: beyond [`ConnectionLimits::max_connections`] a new
//!   connection gets a 503 envelope with `Retry-After` and is closed, and the refusal is
//!   counted (`appfence_connections_refused_total`) and logged as [`Occurrences`] says.
//! - Graceful shutdown: on `stopped`, no new connections; open ones finish their
//!   requests.
//!
//! Each request carries the peer address as `ConnectInfo<PeerAddr>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Semaphore};

use crate::listener::PeerAddr;
use crate::telemetry::Occurrences;

/// Bounds on connections; see the module's documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read: Duration::from_secs(10),
            max_connections: 16_384,
        }
    }
}

/// Concurrent HTTP/2 streams per connection.
const H2_STREAMS: u32 = 16_384;

/// What a connection over the cap is told before it is closed.
fn refusal() -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "code": "ServiceUnavailable",
            "message": "The server has too many open connections; try again later",
            "target": appfence_core::ids::new_guid(),
        }
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `stopped`, then waits for open connections to end.
pub async fn serve<L>(
    mut listener: L,
    app: axum::Router,
    limits: ConnectionLimits,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (close_tx, close_rx) = watch::channel(());
    let (shutdown_tx, _) = watch::channel(false);
    let refused = Occurrences::default();
    tokio::pin!(stopped);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("appfence_connections_refused_total").increment(1);
            if let Some(count) = refused.record() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused_so_far = count,
                    "connection refused: the server has as many open connections as it takes"
                );
            }
            tokio::spawn(async move {
                let mut io = io;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = io.write_all(&refusal()).await;
                    let _ = io.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
                req.map(axum::body::Body::new)
            },
        );
        let hyper_service = TowerToHyperService::new(service);
        let mut shutdown = shutdown_tx.subscribe();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            metrics::gauge!("appfence_connections_open").increment(1.0);
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            // A client may multiplex many waiting devices on one connection (the demo
            // fleet does): their long-polls must not queue behind a low stream cap.
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(H2_STREAMS);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = shutdown.wait_for(|stop| *stop) => {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            metrics::gauge!("appfence_connections_open").decrement(1.0);
            drop(close_rx);
        });
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    drop(close_rx);
    close_tx.closed().await;
    Ok(())
}

/// Raises the soft limit on open files to the hard one (each connection holds one) and
/// logs both; returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to a struct the kernel fills.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    tracing::info!(
        soft_before = before,
        soft = limit.rlim_cur,
        hard = limit.rlim_max,
        "open-file limit"
    );
    limit.rlim_cur as u64
}
