//! Heartbeats written together. Every device heartbeats every 30 s, so a fleet of a
//! million sends 33,000 a second, and on PostgreSQL each was a transaction of its own:
//! the database's commit rate, not the API, bounded the fleet (docs/capacity.md).
//! Heartbeats that arrive while the previous batch is being written wait in a queue;
//! one task takes everything queued (up to [`MAX_BATCH`]) and writes it in one
//! transaction: one `UPDATE … FROM unnest(…)` for the devices' rows, then each
//! heartbeat's address history, then one commit. Each caller is answered after that
//! commit: `Ok`, or "machine not found" for a device that no longer exists. A database
//! error fails the whole batch (after the store's retries of serialization failures),
//! and every caller in it gets it. A heartbeat alone in the queue is written as before.

use std::collections::HashMap;

use appfence_core::{Error, Result, StorageFault};
use appfence_proto::agent::{DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::{addresses, begin, commit, ctx, machines, retry, Fail};
use crate::rows::to_json;

/// The most heartbeats written together: one statement of this many rows, then their
/// address histories, in one transaction.
const MAX_BATCH: usize = 512;
/// Heartbeats that may wait; further callers wait to join the queue.
const QUEUE: usize = 8192;

struct Heartbeat {
    machine_id: String,
    info: DeviceInfo,
    enforcement: EnforcementState,
    at: Timestamp,
}

struct Queued {
    heartbeat: Heartbeat,
    done: oneshot::Sender<Result<()>>,
}

/// The queue in front of the database for heartbeats; cloning shares it.
#[derive(Clone, Debug)]
pub(super) struct HeartbeatQueue {
    queued: mpsc::Sender<Queued>,
}

impl HeartbeatQueue {
    /// Starts the task that writes what is queued; it ends when every handle is gone.
    pub(super) fn start(pool: PgPool) -> HeartbeatQueue {
        let (queued, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(pool, receiver));
        HeartbeatQueue { queued }
    }

    /// Records a heartbeat, answering once it is durable.
    pub(super) async fn record(
        &self,
        machine_id: &str,
        info: &DeviceInfo,
        enforcement: &EnforcementState,
        at: Timestamp,
    ) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        let heartbeat = Heartbeat {
            machine_id: machine_id.to_string(),
            info: info.clone(),
            enforcement: enforcement.clone(),
            at,
        };
        self.queued
            .send(Queued { heartbeat, done })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::storage(
        StorageFault::Unavailable,
        "the writer of heartbeats has stopped (the store is closing)",
    )
}

async fn write_batches(pool: PgPool, mut receiver: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcomes = match batch.as_slice() {
            [one] => {
                let h = &one.heartbeat;
                vec![
                    machines::record_heartbeat(&pool, &h.machine_id, &h.info, &h.enforcement, h.at)
                        .await,
                ]
            }
            many => write_together(&pool, many)
                .await
                .unwrap_or_else(|e| (0..many.len()).map(|_| Err(e.clone())).collect()),
        };
        for (queued, outcome) in batch.drain(..).zip(outcomes) {
            let _ = queued.done.send(outcome);
        }
    }
}

/// The columns of one heartbeat as arrays, one element per device (the newest of a
/// device's heartbeats when it sent several), sorted by device so that concurrent
/// batches lock rows in the same order.
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    os_platform: Vec<String>,
    os_version: Vec<String>,
    kernel_version: Vec<String>,
    os_architecture: Vec<String>,
    agent_version: Vec<String>,
    ip_addresses: Vec<String>,
    last_ip_address: Vec<Option<String>>,
    capabilities: Vec<String>,
    enforcement: Vec<String>,
    last_seen: Vec<i64>,
}

fn columns(batch: &[Queued]) -> Result<Columns> {
    let mut newest: HashMap<&str, &Heartbeat> = HashMap::new();
    for q in batch {
        let h = &q.heartbeat;
        let entry = newest.entry(h.machine_id.as_str()).or_insert(h);
        if h.at >= entry.at {
            *entry = h;
        }
    }
    let mut rows: Vec<&Heartbeat> = newest.into_values().collect();
    rows.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
    let mut c = Columns::default();
    for h in rows {
        c.id.push(h.machine_id.clone());
        c.os_platform.push(h.info.os_platform.clone());
        c.os_version.push(h.info.os_version.clone());
        c.kernel_version.push(h.info.kernel_version.clone());
        c.os_architecture.push(h.info.os_architecture.clone());
        c.agent_version.push(h.info.agent_version.clone());
        c.ip_addresses.push(to_json(&h.info.ip_addresses)?);
        c.last_ip_address.push(h.info.ip_addresses.first().cloned());
        c.capabilities.push(to_json(&h.info.capabilities)?);
        c.enforcement.push(to_json(&h.enforcement)?);
        c.last_seen.push(h.at.ticks());
    }
    Ok(c)
}

/// Writes every heartbeat in one transaction: each one's own outcome, or the error
/// that failed them all.
async fn write_together(pool: &PgPool, batch: &[Queued]) -> Result<Vec<Result<()>>> {
    let c = columns(batch)?;
    let tenants: HashMap<String, String> = retry(|| async {
        let mut tx = begin(pool).await?;
        let found: Vec<(String, String)> = sqlx::query_as(
            "UPDATE machines m SET os_platform = h.os_platform, os_version = h.os_version, \
                 kernel_version = h.kernel_version, os_architecture = h.os_architecture, \
                 agent_version = h.agent_version, ip_addresses = h.ip_addresses::jsonb, \
                 last_ip_address = h.last_ip_address, capabilities = h.capabilities::jsonb, \
                 enforcement = h.enforcement::jsonb, last_seen = h.last_seen, \
                 health_status = CASE WHEN m.offboarded IS NULL THEN 'Active' \
                     ELSE m.health_status END \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
                         $11::bigint[]) \
                  AS h(id, os_platform, os_version, kernel_version, os_architecture, \
                       agent_version, ip_addresses, last_ip_address, capabilities, \
                       enforcement, last_seen) \
             WHERE m.id = h.id RETURNING m.id, m.tenant_id",
        )
        .bind(&c.id)
        .bind(&c.os_platform)
        .bind(&c.os_version)
        .bind(&c.kernel_version)
        .bind(&c.os_architecture)
        .bind(&c.agent_version)
        .bind(&c.ip_addresses)
        .bind(&c.last_ip_address)
        .bind(&c.capabilities)
        .bind(&c.enforcement)
        .bind(&c.last_seen)
        .fetch_all(&mut *tx)
        .await
        .map_err(ctx("cannot record heartbeats"))?;
        let tenants: HashMap<String, String> = found.into_iter().collect();
        // Every heartbeat's addresses, in the order they arrived.
        for q in batch {
            let h = &q.heartbeat;
            if let Some(tenant_id) = tenants.get(&h.machine_id) {
                addresses::record(
                    &mut tx,
                    &h.machine_id,
                    tenant_id,
                    &h.info.ip_addresses,
                    h.at,
                )
                .await?;
            }
        }
        commit(tx).await?;
        Ok::<_, Fail>(tenants)
    })
    .await?;
    Ok(batch
        .iter()
        .map(|q| match tenants.contains_key(&q.heartbeat.machine_id) {
            true => Ok(()),
            false => Err(Error::machine_not_found(&q.heartbeat.machine_id)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use appfence_core::MachineRef;

    use super::*;
    use crate::contract::{at, new_machine, new_tenant};
    use crate::Store;

    fn queued(machine_id: &str, version: &str, at: Timestamp) -> Queued {
        Queued {
            heartbeat: Heartbeat {
                machine_id: machine_id.into(),
                info: DeviceInfo {
                    agent_version: version.into(),
                    ip_addresses: vec!["10.9.0.1".into()],
                    ..DeviceInfo::default()
                },
                enforcement: EnforcementState::default(),
                at,
            },
            done: oneshot::channel().0,
        }
    }

    /// One batch: two devices, one of them twice (its newer heartbeat is what the row
    /// keeps, whatever the order in the batch), and a device that does not exist,
    /// refused alone while the rest commits.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_updates_each_device_once_and_refuses_the_unknown_alone() {
        let Some(store) = super::super::tests::fresh("heartbeat_batch").await else {
            return;
        };
        let t = new_tenant(store.as_ref()).await;
        let a = new_machine(store.as_ref(), &t, "a.corp.example").await;
        let b = new_machine(store.as_ref(), &t, "b.corp.example").await;
        let batch = vec![
            queued(&a.id, "2.0.0", at(20)),
            queued(&b.id, "1.5.0", at(15)),
            queued(&"f".repeat(40), "1.0.0", at(10)),
            queued(&a.id, "1.9.0", at(19)),
        ];
        let outcomes = write_together(&store.pool, &batch).await.unwrap();
        assert_eq!(outcomes[0], Ok(()));
        assert_eq!(outcomes[1], Ok(()));
        assert!(matches!(
            outcomes[2],
            Err(Error::ResourceNotFound(_) | Error::NotFound(_))
        ));
        assert_eq!(outcomes[3], Ok(()));
        for (m, version, seen) in [(&a, "2.0.0", at(20)), (&b, "1.5.0", at(15))] {
            let got = store
                .machine(&t.id, &MachineRef::Id(m.id.clone()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (got.agent_version.as_str(), got.last_seen),
                (version, Some(seen))
            );
        }
        let seen = store
            .machines_seen_with_ip(&t.id, "10.9.0.1", at(0), at(30))
            .await
            .unwrap();
        let mut ids: Vec<_> = seen.iter().map(|m| m.id.clone()).collect();
        ids.sort();
        let mut expected = vec![a.id.clone(), b.id.clone()];
        expected.sort();
        assert_eq!(ids, expected);
        store.close().await;
    }
}
