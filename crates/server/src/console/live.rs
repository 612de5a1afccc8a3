//! Server-sent events for the console's live regions. A stream sends the regions it
//! shows at once (so nothing that changed while the page loaded is missed), then again
//! whenever a change concerns them, at most about twice a second and only when
//! they look different. It re-checks the session each time (a signed-out or expired
//! session ends it), ends after [`STREAM_LIFETIME`] (the browser reconnects), and ends
//! when the server stops. At most [`LIVE_STREAM_LIMIT`] run at once per replica, and
//! [`LIVE_STREAMS_PER_SESSION`] per session; beyond that a page simply is not live.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use appfence_core::Error;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};

use super::actions::ActionFilters;
use super::session::{self, Viewer};
use crate::watchers::Seen;
use crate::AppState;

pub const LIVE_STREAM_LIMIT: usize = 512;
/// Live streams one session may hold (a few tabs), so that one user cannot take them all.
pub const LIVE_STREAMS_PER_SESSION: usize = 8;
const STREAM_LIFETIME: Duration = Duration::from_secs(300);
/// Changes within this much time are rendered once.
const COALESCE: Duration = Duration::from_millis(500);

static SLOTS: std::sync::LazyLock<Arc<Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(Semaphore::new(LIVE_STREAM_LIMIT)));

/// Open streams per session.
static PER_SESSION: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, usize>>,
> = std::sync::LazyLock::new(Default::default);

/// One session's hold on a stream, given back when the stream ends.
struct SessionSlot(String);

impl SessionSlot {
    fn take(session: &str) -> Option<SessionSlot> {
        let mut open = PER_SESSION.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(session.to_string()).or_default();
        if *n >= LIVE_STREAMS_PER_SESSION {
            return None;
        }
        *n += 1;
        Some(SessionSlot(session.to_string()))
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = PER_SESSION.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.0);
            }
        }
    }
}

/// What a stream shows.
enum View {
    Actions(ActionFilters),
    Device(String),
}

impl View {
    fn concerns(&self, seen: &Seen, tenant_id: &str) -> bool {
        match (self, seen) {
            (_, Seen::Everything) => true,
            (View::Actions(_), Seen::Machine(_)) => true,
            (View::Actions(_), Seen::Tenant(_)) => false,
            (View::Device(id), Seen::Machine(m)) => id.as_str() == &**m,
            (View::Device(_), Seen::Tenant(t)) => &**t == tenant_id,
        }
    }

    async fn render(&self, state: &AppState, viewer: &Viewer) -> Result<serde_json::Value, Error> {
        match self {
            View::Actions(filters) => {
                let (rows, _) = super::actions::rows(state, viewer, filters).await?;
                Ok(serde_json::json!({ "action-rows": rows.0 }))
            }
            View::Device(id) => {
                let machine = super::device::visible(state, viewer, id).await?;
                Ok(super::device::regions(state, viewer, &machine)
                    .await?
                    .as_json())
            }
        }
    }
}

pub async fn actions(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    filters: Result<Query<ActionFilters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let mut filters = filters.map(|Query(f)| f).unwrap_or_default();
    filters.page = None;
    open(state, viewer, &headers, View::Actions(filters)).await
}

pub async fn device(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    open(state, viewer, &headers, View::Device(id)).await
}

async fn open(state: AppState, viewer: Viewer, headers: &HeaderMap, view: View) -> Response {
    // Rendered once before the stream starts: a view the viewer may not see is an error
    // now, not a stream that ends at once.
    let first = match view.render(&state, &viewer).await {
        Ok(v) => v,
        Err(e) => return (super::status_of(&e), super::words::in_words(&e)).into_response(),
    };
    let (Some(session_slot), Ok(permit)) = (
        SessionSlot::take(viewer.session_id()),
        SLOTS.clone().try_acquire_owned(),
    ) else {
        metrics::counter!("appfence_console_live_refused_total").increment(1);
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many live views; this page is not live",
        )
            .into_response();
        // EventSource gives up on a 503: no retry storm.
        resp.headers_mut().insert(header::RETRY_AFTER, 60.into());
        return resp;
    };
    let Some(secret) = session_secret(&state, headers) else {
        return (StatusCode::UNAUTHORIZED, "Sign in first").into_response();
    };
    let feed = Feed {
        rx: state.watchers.subscribe(),
        stopping: state.watchers.stopping(),
        deadline: tokio::time::Instant::now() + STREAM_LIFETIME,
        tenant_id: viewer.principal.tenant_id.clone(),
        state,
        secret,
        view,
        last: None,
        first: Some(first),
        _permit: permit,
        _session_slot: session_slot,
    };
    let mut resp = Sse::new(stream(feed))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // A buffering reverse proxy (nginx) passes the events on as they come.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp
}

fn session_secret(state: &AppState, headers: &HeaderMap) -> Option<String> {
    session::cookie(headers, session::cookie_name(state)).map(str::to_string)
}

struct Feed {
    state: AppState,
    secret: String,
    tenant_id: String,
    view: View,
    rx: broadcast::Receiver<Seen>,
    stopping: tokio::sync::watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    last: Option<String>,
    first: Option<serde_json::Value>,
    _permit: OwnedSemaphorePermit,
    _session_slot: SessionSlot,
}

impl Feed {
    /// Waits for a change that concerns this view; false when the stream should end.
    async fn wait(&mut self) -> bool {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => return false,
                _ = self.stopping.wait_for(|s| *s) => return false,
                seen = self.rx.recv() => match seen {
                    Ok(seen) if self.view.concerns(&seen, &self.tenant_id) => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return false,
                },
            }
        }
        // Let a burst of changes land, then render once.
        tokio::time::sleep(COALESCE).await;
        while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = self.rx.try_recv() {}
        true
    }

    /// The next event to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            let regions = match self.first.take() {
                Some(first) => first,
                None => {
                    if !self.wait().await {
                        return None;
                    }
                    // Signed out, expired or deleted since: the stream ends.
                    let viewer = session::load(&self.state, &self.secret)
                        .await
                        .ok()
                        .flatten()?;
                    match self.view.render(&self.state, &viewer).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::info!(error = %e, "live view ended");
                            return None;
                        }
                    }
                }
            };
            let data = regions.to_string();
            if self.last.as_deref() == Some(data.as_str()) {
                continue;
            }
            self.last = Some(data.clone());
            return Some(Event::default().event("replace").data(data));
        }
    }
}

fn stream(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(feed, |mut feed| async move {
        feed.next().await.map(|event| (Ok(event), feed))
    })
}
