//! Who watches the fleet live: the web console's pages that update without a reload.
//! Every change this replica makes or hears of from another replica is fanned out here
//! as "what may look different now"; each live view re-reads what it shows when one
//! concerns it. A bounded broadcast: a view that falls behind is told it lagged and
//! re-reads everything it shows, so nothing is missed and nothing piles up.

use std::sync::Arc;

use appfence_store::Change;
use tokio::sync::{broadcast, watch};

/// Changes kept for a slow view before it is told it lagged.
const BUFFER: usize = 1024;

/// What may look different now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A device, its actions, enforcement state or denials.
    Machine(Arc<str>),
    /// Every device of a tenant (its allowlist).
    Tenant(Arc<str>),
    /// Anything (device groups changed, or changes were missed).
    Everything,
}

pub struct Watchers {
    seen: broadcast::Sender<Seen>,
    stopping: watch::Sender<bool>,
}

impl Default for Watchers {
    fn default() -> Self {
        Watchers {
            seen: broadcast::channel(BUFFER).0,
            stopping: watch::channel(false).0,
        }
    }
}

impl Watchers {
    pub fn subscribe(&self) -> broadcast::Receiver<Seen> {
        self.seen.subscribe()
    }

    /// Tells the live views about `change` (nobody listening is fine).
    pub fn tell(&self, change: &Change) {
        if self.seen.receiver_count() == 0 {
            return;
        }
        let seen = match change {
            Change::Machine(id) | Change::Observed(id) => Seen::Machine(id.as_str().into()),
            Change::Tenant(id) => Seen::Tenant(id.as_str().into()),
            Change::Groups | Change::Everything => Seen::Everything,
        };
        let _ = self.seen.send(seen);
    }

    /// Ends every live view (the server is stopping: open streams must not hold the
    /// graceful shutdown).
    pub fn stop(&self) {
        let _ = self.stopping.send(true);
    }

    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}
