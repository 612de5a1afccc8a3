//! Wakes a device's waiting long-poll as soon as something changes for it, so the hot
//! path has no fixed polling interval. In process: one `Notify` per device that has a
//! waiter. Across replicas, the changes the store publishes (PostgreSQL LISTEN/NOTIFY)
//! wake it the same way: see `AppState::announce`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Dispatcher {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Dispatcher {
    /// The notifier of a device. Call `notified()` and `enable()` on it *before*
    /// reading the store, so a change between the read and the wait is not lost.
    pub fn subscribe(&self, machine_id: &str) -> Arc<Notify> {
        let mut map = self.waiters.lock().expect("dispatcher lock");
        map.entry(machine_id.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Wakes every request waiting for this device.
    pub fn notify(&self, machine_id: &str) {
        let map = self.waiters.lock().expect("dispatcher lock");
        if let Some(n) = map.get(machine_id) {
            n.notify_waiters();
        }
    }

    /// Wakes every waiting device: for changes that concern many devices (the tenant's
    /// allowlist). A woken device that has nothing new simply polls again.
    pub fn notify_all(&self) {
        let map = self.waiters.lock().expect("dispatcher lock");
        for n in map.values() {
            n.notify_waiters();
        }
    }

    /// Forgets a device's notifier once nobody holds it (called when a wait ends).
    pub fn release(&self, machine_id: &str, notify: Arc<Notify>) {
        let mut map = self.waiters.lock().expect("dispatcher lock");
        drop(notify);
        if map
            .get(machine_id)
            .is_some_and(|n| Arc::strong_count(n) == 1)
        {
            map.remove(machine_id);
        }
    }

    /// Number of devices with a waiter (for tests and metrics).
    pub fn waiting_devices(&self) -> usize {
        self.waiters.lock().expect("dispatcher lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn notify_wakes_an_enabled_waiter_and_release_cleans_up() {
        let d = Dispatcher::default();
        let n = d.subscribe("m1");
        {
            let notified = n.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            d.notify("m1"); // before the await: must not be lost
            tokio::time::timeout(Duration::from_secs(1), notified)
                .await
                .expect("woken");
        }
        assert_eq!(d.waiting_devices(), 1);
        d.release("m1", n);
        assert_eq!(d.waiting_devices(), 0);
        d.notify("unknown"); // no waiter: nothing happens
    }
}
