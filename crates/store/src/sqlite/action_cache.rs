//! Recently written actions, kept in memory so that the hot read of the API
//! (`GET /api/machineactions/{id}`, polled by every client) needs no trip to SQLite.
//!
//! Sound only because this store is embedded: every write to `actions` goes through this
//! process's single writer, and the cache is filled from those writes only — never from
//! reads, which could race a write and put an older version back. Writes can finish in
//! any order, so an entry is replaced only by a version at least as far along the
//! lifecycle (statuses only move forward; a final one never changes).

use std::collections::HashMap;
use std::sync::Mutex;

use appfence_core::records::ActionRecord;
use appfence_proto::ActionStatus;

const CAPACITY: usize = 50_000;

#[derive(Debug, Default)]
pub(super) struct ActionCache {
    by_id: Mutex<HashMap<String, ActionRecord>>,
}

/// Position of a status in the lifecycle.
fn rank(s: ActionStatus) -> u8 {
    match s {
        ActionStatus::Pending => 0,
        ActionStatus::InProgress => 1,
        _ => 2,
    }
}

impl ActionCache {
    pub(super) fn get(&self, tenant_id: &str, id: &str) -> Option<ActionRecord> {
        let map = self.by_id.lock().expect("action cache lock");
        map.get(id).filter(|a| a.tenant_id == tenant_id).cloned()
    }

    /// Records the action as a write left it.
    pub(super) fn written(&self, action: &ActionRecord) {
        let mut map = self.by_id.lock().expect("action cache lock");
        if let Some(known) = map.get(&action.id) {
            let newer = (rank(action.status), action.last_update)
                >= (rank(known.status), known.last_update);
            if !newer {
                return;
            }
        } else if map.len() >= CAPACITY {
            // Evict one entry; a miss only costs a read from SQLite.
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        map.insert(action.id.clone(), action.clone());
    }

    /// Forgets actions that were deleted (retention: final ones, never written again).
    pub(super) fn removed(&self, ids: &[String]) {
        let mut map = self.by_id.lock().expect("action cache lock");
        for id in ids {
            map.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract;
    use appfence_proto::{ActionType, Timestamp};

    fn action(status: ActionStatus, at: i64) -> ActionRecord {
        let machine = contract::machine_record("t", "h.example");
        ActionRecord {
            id: "a".into(),
            status,
            last_update: Timestamp::from_ticks(at),
            ..contract::action_record(
                &machine,
                ActionType::RestrictCodeExecution,
                Timestamp::from_ticks(0),
            )
        }
    }

    #[test]
    fn an_older_write_finishing_late_never_replaces_a_newer_one() {
        let cache = ActionCache::default();
        cache.written(&action(ActionStatus::Pending, 1));
        cache.written(&action(ActionStatus::Succeeded, 3));
        cache.written(&action(ActionStatus::InProgress, 2));
        assert_eq!(cache.get("t", "a").unwrap().status, ActionStatus::Succeeded);
        assert_eq!(cache.get("other tenant", "a"), None);
        assert_eq!(cache.get("t", "b"), None);
    }
}
