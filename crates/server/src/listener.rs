//! Where connections come from: plain TCP, or TLS whose handshakes never hold up the
//! accept loop.
//!
//! With TLS, TCP connections are accepted at once and each handshake runs in a task of
//! its own, at most [`MAX_HANDSHAKES`] at a time and each within [`HANDSHAKE_TIMEOUT`]
//! (a client that connects and says nothing costs one slot for that long, then
//! nothing); the connection loop (`connections`) takes the finished TLS streams from a
//! channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;

use crate::telemetry::Occurrences;

/// Handshakes in progress at most; connections beyond are closed at once.
pub const MAX_HANDSHAKES: usize = 1024;
/// The longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The address a request came from (before any trusted proxy's `X-Forwarded-For`).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Accepts a TCP connection; an error (out of file descriptors, say) is counted
/// (`appfence_accept_errors_total`), logged as [`Occurrences`] says, and waited out,
/// never spun on.
pub async fn accept_tcp(tcp: &TcpListener, errors: &Occurrences) -> (TcpStream, SocketAddr) {
    loop {
        match tcp.accept().await {
            Ok(c) => return c,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                metrics::counter!("appfence_accept_errors_total").increment(1);
                if let Some(count) = errors.record() {
                    tracing::error!(error = %e, errors_so_far = count, "cannot accept connections (out of file descriptors?)");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Plain TCP, with accept errors handled as [`accept_tcp`] says.
pub struct PlainListener {
    tcp: TcpListener,
    errors: Occurrences,
}

impl PlainListener {
    pub fn new(tcp: TcpListener) -> Self {
        PlainListener {
            tcp,
            errors: Occurrences::default(),
        }
    }
}

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        accept_tcp(&self.tcp, &self.errors).await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// TLS connections whose handshakes are done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    pub fn start(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accepting = tokio::spawn(async move {
            let errors = Occurrences::default();
            loop {
                let (stream, peer) = accept_tcp(&tcp, &errors).await;
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    metrics::counter!("appfence_tls_handshakes_total", "outcome" => "refused_busy")
                        .increment(1);
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            metrics::counter!("appfence_tls_handshakes_total", "outcome" => "ok")
                                .increment(1);
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("appfence_tls_handshakes_total", "outcome" => "failed").increment(1);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("appfence_tls_handshakes_total", "outcome" => "timeout").increment(1);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended (it never does by itself): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
