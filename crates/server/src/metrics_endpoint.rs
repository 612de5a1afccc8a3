//! Prometheus metrics on a listener of their own (`serve --metrics-listen ADDR`, off by
//! default), so that they can be scraped from a management network without exposing
//! them on the API's address. The recorder is process-wide (the `metrics` facade's);
//! code anywhere counts with `metrics::counter!`.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. If another recorder was
/// installed first (a test harness), this one still renders what it was given: nothing.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(crate::telemetry::DURATION_BUCKETS)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

/// Binds `addr` and serves `GET /metrics` until `shutdown`; returns the bound address.
pub async fn start(
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, String> {
    let handle = handle();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let upkeep = handle.clone();
    let mut stop_upkeep = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                _ = stop_upkeep.wait_for(|s| *s) => break,
            }
        }
    });
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let text = handle.render();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    text,
                )
                    .into_response()
            }
        }),
    );
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    tracing::info!(%local, "metrics listening");
    Ok(local)
}
