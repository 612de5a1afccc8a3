//! Sending denials to the server: the enforcer is drained often into a bounded local
//! buffer, and the buffer is sent in batches (`POST /agent/v1/events`) when it holds
//! enough events or the oldest waited long enough. A failed send is retried with
//! backoff; the buffer drops its oldest events when full (counted and logged). This
//! runs in its own task: enforcement never waits for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use appfence_proto::agent::{DenialEvent, EventBatch, MAX_EVENTS_PER_BATCH};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::backoff::Backoff;
use crate::client::{ClientError, GatewayClient};
use crate::enforcer::Enforcer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSettings {
    /// How often the enforcer is drained.
    pub drain_interval: Duration,
    /// Buffered events are sent at least this often...
    pub send_interval: Duration,
    /// ...and at once when this many are waiting.
    pub send_threshold: usize,
    /// Events kept while the server cannot take them; beyond, the oldest are dropped.
    pub buffer: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            drain_interval: Duration::from_millis(250),
            send_interval: Duration::from_secs(2),
            send_threshold: 100,
            buffer: 10_000,
        }
    }
}

/// Events waiting to be sent, oldest first, bounded.
#[derive(Debug)]
pub struct EventBuffer {
    events: VecDeque<DenialEvent>,
    capacity: usize,
    dropped: u64,
}

impl EventBuffer {
    pub fn new(capacity: usize) -> Self {
        EventBuffer {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    pub fn push(&mut self, event: DenialEvent) {
        if self.events.len() >= self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// The oldest events, at most one batch, without removing them.
    pub fn next_batch(&self) -> EventBatch {
        EventBatch {
            events: self
                .events
                .iter()
                .take(MAX_EVENTS_PER_BATCH)
                .cloned()
                .collect(),
        }
    }

    /// Removes the `count` oldest events (a batch that was sent).
    pub fn consume(&mut self, count: usize) {
        self.events.drain(..count.min(self.events.len()));
    }
}

/// Drains `enforcer` and sends its denials until `shutdown`.
pub async fn ship_denials(
    enforcer: Arc<dyn Enforcer>,
    client: GatewayClient,
    settings: EventSettings,
    backoff: Backoff,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buffer = EventBuffer::new(settings.buffer);
    let mut last_send = Instant::now();
    let mut retry_at: Option<Instant> = None;
    let mut attempt = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(settings.drain_interval) => {}
        }
        for event in enforcer.drain_denials() {
            buffer.push(event);
        }
        let dropped = buffer.take_dropped();
        if dropped > 0 {
            warn!(
                dropped,
                kept = buffer.len(),
                "denial buffer full: the oldest denials were dropped"
            );
        }
        if buffer.is_empty() || retry_at.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let due = buffer.len() >= settings.send_threshold
            || last_send.elapsed() >= settings.send_interval
            || retry_at.is_some();
        if !due {
            continue;
        }
        retry_at = None;
        while !buffer.is_empty() {
            let batch = buffer.next_batch();
            let count = batch.events.len();
            let sent = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                r = client.send_events(&batch) => r,
            };
            match sent {
                Ok(resp) => {
                    debug!(count, accepted = resp.accepted, "denials sent");
                    buffer.consume(count);
                    attempt = 0;
                }
                Err(e) if e.is_retryable() || matches!(e, ClientError::Unauthorized(_)) => {
                    let delay = backoff.next_delay(attempt);
                    attempt = attempt.saturating_add(1);
                    warn!(error = %e, waiting = buffer.len(), retry_in = ?delay, "cannot send denials; keeping them");
                    retry_at = Some(Instant::now() + delay);
                    break;
                }
                Err(e) => {
                    // The server refuses this batch for good (bad request): sending it
                    // again would block every later one.
                    error!(error = %e, count, "the server refused a batch of denials; dropping it");
                    buffer.consume(count);
                }
            }
        }
        last_send = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_proto::agent::DenialKind;
    use appfence_proto::Timestamp;

    fn denial(pid: u32) -> DenialEvent {
        DenialEvent {
            time: Timestamp::from_unix_seconds(1),
            path: format!("/tmp/p{pid}"),
            sha256: None,
            pid,
            uid: Some(0),
            parent: None,
            kind: DenialKind::Exec,
            monitor: false,
            rule: None,
            indicator_id: None,
            alert: false,
            command_line: None,
            user: None,
        }
    }

    #[test]
    fn the_buffer_is_bounded_and_batches_are_capped() {
        let mut b = EventBuffer::new(MAX_EVENTS_PER_BATCH + 10);
        for pid in 0..(MAX_EVENTS_PER_BATCH as u32 + 12) {
            b.push(denial(pid));
        }
        assert_eq!(b.len(), MAX_EVENTS_PER_BATCH + 10);
        assert_eq!(b.take_dropped(), 2);
        assert_eq!(b.take_dropped(), 0);
        let batch = b.next_batch();
        assert_eq!(batch.events.len(), MAX_EVENTS_PER_BATCH);
        assert_eq!(batch.events[0].pid, 2, "the oldest were dropped");
        b.consume(batch.events.len());
        assert_eq!(b.next_batch().events.len(), 10);
        b.consume(100);
        assert!(b.is_empty());
    }
}
