//! Fail fast while the database cannot be reached.
//!
//! Without this, every request waits the whole acquire timeout for a connection that
//! cannot be made (measured: each restrict took 5.0 s to get its 503 while the database
//! was stopped), so a replica's handlers pile up behind a database that is down. Once
//! an operation has found the database unreachable, one operation at a time (the probe)
//! tries it again; every other one is answered "unreachable" at once. Any answer from
//! the database, even an error, ends the outage. No clock: the probe is the pace.

use std::sync::atomic::{AtomicBool, Ordering};

use appfence_core::{Error, Result, StorageFault};

#[derive(Debug, Default)]
pub(super) struct Outage {
    down: AtomicBool,
    pub(super) probing: AtomicBool,
}

/// Held by the one operation that tries the database during an outage.
pub(super) struct Probe<'a>(&'a Outage);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.probing.store(false, Ordering::Release);
    }
}

impl Outage {
    /// Lets an operation try the database: always when it is up, one at a time when
    /// it is not.
    pub(super) fn admit(&self) -> Result<Option<Probe<'_>>> {
        if !self.down.load(Ordering::Acquire) {
            return Ok(None);
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(Some(Probe(self))),
            Err(_) => Err(Error::storage(
                StorageFault::Unreachable,
                "the database is unreachable; another request is trying it",
            )),
        }
    }

    /// Learns from an operation's outcome whether the database can be reached.
    pub(super) fn observe<T>(&self, outcome: &Result<T>) {
        let unreachable = matches!(
            outcome,
            Err(Error::Storage {
                fault: StorageFault::Unreachable,
                ..
            })
        );
        self.down.store(unreachable, Ordering::Release);
    }

    #[cfg(test)]
    pub(super) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

/// Runs a store operation through the gate: `guarded!(self, module::op(&self.pool, ..))`.
macro_rules! guarded {
    ($store:expr, $op:expr) => {{
        let _probe = $store.outage.admit()?;
        let outcome = $op.await;
        $store.outage.observe(&outcome);
        outcome
    }};
}
pub(super) use guarded;

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Result<()> {
        Err(Error::storage(
            StorageFault::Unreachable,
            "connection refused",
        ))
    }

    #[test]
    fn one_probe_at_a_time_while_down_and_all_again_once_it_answers() {
        let gate = Outage::default();
        assert!(gate.admit().unwrap().is_none(), "up: no probe needed");
        gate.observe(&unreachable());
        assert!(gate.is_down());
        let probe = gate.admit().unwrap().expect("the first caller probes");
        let refused = gate
            .admit()
            .err()
            .expect("a second caller is refused at once");
        assert!(matches!(
            refused,
            Error::Storage {
                fault: StorageFault::Unreachable,
                ..
            }
        ));
        drop(probe);
        let probe = gate.admit().unwrap().expect("the next caller probes");
        // The database answers, even with an error of its own: it is reachable.
        gate.observe::<()>(&Err(Error::Internal("syntax error".into())));
        drop(probe);
        assert!(!gate.is_down());
        assert!(gate.admit().unwrap().is_none());
    }

    #[test]
    fn other_storage_faults_do_not_open_the_gate() {
        let gate = Outage::default();
        gate.observe::<()>(&Err(Error::storage(StorageFault::Full, "disk full")));
        gate.observe::<()>(&Err(Error::storage(
            StorageFault::Unavailable,
            "statement timeout",
        )));
        assert!(!gate.is_down());
    }
}
