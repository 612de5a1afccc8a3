//! Spec §7 under concurrency: many simultaneous restricts on one idle device create
//! exactly one action.

use std::time::Duration;

use futures::future::join_all;

use crate::harness::{generous_limits, within, TestServer, ALL_ROLES};

const CALLS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_restricts_create_exactly_one_action() {
    let server = TestServer::start_with(generous_limits, None).await;
    let api = server.api(ALL_ROLES).await;
    let dev = server.enroll("race-host").await;
    let other = server.enroll("bystander").await;

    // Half by machine id, half by DNS name, mixed with unrestricts: one slot for all.
    let calls = (0..CALLS).map(|i| {
        let api = api.clone();
        let key = if i % 2 == 0 {
            dev.machine_id.clone()
        } else {
            dev.hostname.clone()
        };
        tokio::spawn(async move {
            if i % 3 == 0 {
                api.unrestrict(&key, &format!("call {i}")).await
            } else {
                api.restrict(&key, &format!("call {i}")).await
            }
        })
    });
    let results = within(
        Duration::from_secs(120),
        "200 concurrent calls",
        join_all(calls),
    )
    .await;
    let mut created = Vec::new();
    let mut duplicates = 0;
    for r in results {
        let r = r.expect("task");
        match r.status {
            201 => created.push(r.json()),
            _ => {
                let e = r.assert_error(400, "ActiveRequestAlreadyExists");
                assert_eq!(e.message, "Action is already in progress");
                duplicates += 1;
            }
        }
    }
    assert_eq!(created.len(), 1, "exactly one 201: {created:?}");
    assert_eq!(duplicates, CALLS - 1);

    let stored = server.stored_actions(&server.tenant_id).await;
    assert_eq!(stored.len(), 1, "the store holds exactly one action");
    assert_eq!(stored[0].id, created[0]["id"].as_str().unwrap());
    assert_eq!(stored[0].machine_id, dev.machine_id);
    assert_eq!(stored[0].status, appfence_proto::ActionStatus::Pending);
    let open = server
        .state
        .store
        .open_actions(&dev.machine_id)
        .await
        .unwrap();
    assert_eq!(open.len(), 1);

    // The slot is per device: another device is unaffected.
    let r = api.restrict(&other.machine_id, "independent").await;
    assert_eq!(r.status, 201, "{}", r.text);
    server.stop().await;
}
