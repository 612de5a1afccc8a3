//! The alert checks of the contract: raising and grouping, the creation order a poller
//! relies on, lists with and without evidence, scoped reads, all-or-nothing updates
//! with their audit records, protection alerts raised once, retention, and silent
//! restricted machines.

use std::collections::HashMap;

use appfence_core::alerts::detectors::{denial_alerts, protection_gap_alert, silence_alert};
use appfence_core::alerts::{AlertChange, AlertSettings, AlertStatus};
use appfence_core::odata::{AlertField, CmpOp, Expr, Query, Value};
use appfence_core::rbac::DeviceScope;
use appfence_core::Error;
use appfence_proto::agent::{DeviceInfo, EnforcementState};

use super::{at, denial, machine_record, new_machine, new_tenant};
use crate::Store;

fn after(t: appfence_proto::Timestamp) -> Query<AlertField> {
    Query {
        filter: Some(Expr::Compare {
            field: AlertField::AlertCreationTime,
            op: CmpOp::Gt,
            value: Value::Timestamp(t),
        }),
        ..Query::default()
    }
}

pub async fn alerts(store: &dyn Store) {
    let t = new_tenant(store).await;
    let mut web = machine_record(&t.id, "alerts-web.example");
    web.rbac_group_id = 5;
    web.rbac_group_name = Some("Web".into());
    store.insert_machine(&web).await.unwrap();
    let db = new_machine(store, &t, "alerts-db.example").await;
    let settings = AlertSettings::default();
    let none = HashMap::new();

    // Two batches with the same file: one alert whose last event moves.
    let first = [denial(100, "/tmp/x"), denial(101, "/tmp/x")];
    let raise = |m, events: Vec<_>, now| {
        let c = denial_alerts(m, &events, &none, &settings, at(now));
        async move { store.record_denials(m, &events, &c, at(now)).await.unwrap() }
    };
    raise(&web, first.to_vec(), 110).await;
    raise(&web, vec![denial(200, "/tmp/x")], 210).await;
    let mut other = denial(205, "/tmp/y");
    other.sha256 = Some("cd".repeat(32));
    raise(&db, vec![other], 210).await;

    let all = store
        .list_alerts(&t.id, &DeviceScope::All, &Query::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2, "{:?}", all.items);
    let (y, x) = (&all.items[0], &all.items[1]);
    assert_eq!(x.machine_id, web.id);
    assert_eq!(x.event_count, 3);
    assert_eq!((x.first_event, x.last_event), (at(100), at(200)));
    assert_eq!(x.last_update, at(210));
    assert_eq!(x.created, at(110));
    assert_eq!(x.rbac_group_name.as_deref(), Some("Web"));
    assert_eq!(x.status, "New");
    assert!(x.evidence.is_empty(), "evidence only when expanded");
    // Both raised "at 210" in the same tenant: creation times still differ and follow
    // commit order.
    assert!(y.created > x.created, "{:?} {:?}", y.created, x.created);
    let expanded = store
        .list_alerts(
            &t.id,
            &DeviceScope::All,
            &Query {
                expand: vec!["evidence"],
                ..Query::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(expanded.items[1].evidence[0].entity_type, "File");
    assert_eq!(
        expanded.items[1].evidence[0].file_name.as_deref(),
        Some("x")
    );

    // No incidents in appfence: incidentId is null, on both engines.
    let incident = |value| Query {
        filter: Some(Expr::Compare {
            field: AlertField::IncidentId,
            op: CmpOp::Eq,
            value,
        }),
        ..Query::default()
    };
    let null = store
        .list_alerts(&t.id, &DeviceScope::All, &incident(Value::Null))
        .await
        .unwrap();
    assert_eq!(null.items.len(), 2);
    let five = store
        .list_alerts(&t.id, &DeviceScope::All, &incident(Value::Integer(5)))
        .await
        .unwrap();
    assert!(five.items.is_empty());

    // Same-time raises get distinct, growing creation times.
    for i in 0..3 {
        let mut d = denial(300, &format!("/tmp/burst-{i}"));
        d.sha256 = Some(format!("{i:0>64}"));
        raise(&db, vec![d], 300).await;
    }
    let burst = store
        .list_alerts(&t.id, &DeviceScope::All, &after(y.created))
        .await
        .unwrap();
    let times: Vec<_> = burst.items.iter().map(|a| a.created.ticks()).collect();
    assert_eq!(times.len(), 3);
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "newest first, distinct: {times:?}"
    );
    assert_eq!(times[2], at(300).ticks());

    // Scoped reads: a caller limited to group 5 sees only web's alert.
    let web_only = DeviceScope::Groups(vec![5]);
    let scoped = store
        .list_alerts(&t.id, &web_only, &Query::default())
        .await
        .unwrap();
    assert_eq!(scoped.items.len(), 1);
    assert!(store
        .get_alert(&t.id, &y.id, &web_only)
        .await
        .unwrap()
        .is_none());
    let got = store
        .get_alert(&t.id, &x.id, &web_only)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.evidence.len(), 3, "a single alert carries its evidence");
    let foreign = new_tenant(store).await;
    assert!(store
        .get_alert(&foreign.id, &x.id, &DeviceScope::All)
        .await
        .unwrap()
        .is_none());

    // Updates: all or nothing, audited.
    let resolve = AlertChange {
        status: Some(AlertStatus::Resolved),
        comment: Some("contained".into()),
        classification: Some("TruePositive"),
        ..AlertChange::default()
    };
    let missing = store
        .update_alerts(
            &t.id,
            &[x.id.clone(), "af1_1".into()],
            &resolve,
            &DeviceScope::All,
            "analyst@example",
            at(400),
        )
        .await;
    assert!(
        matches!(missing, Err(Error::ResourceNotFound(_))),
        "{missing:?}"
    );
    let denied = store
        .update_alerts(
            &t.id,
            &[y.id.clone()],
            &resolve,
            &web_only,
            "analyst@example",
            at(400),
        )
        .await;
    assert!(
        matches!(denied, Err(Error::ResourceNotFound(_))),
        "{denied:?}"
    );
    let unchanged = store
        .get_alert(&t.id, &x.id, &DeviceScope::All)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (unchanged.status.as_str(), unchanged.comments.len()),
        ("New", 0)
    );
    let done = store
        .update_alerts(
            &t.id,
            &[x.id.clone()],
            &resolve,
            &DeviceScope::All,
            "analyst@example",
            at(400),
        )
        .await
        .unwrap();
    assert_eq!(done[0].status, "Resolved");
    assert_eq!(done[0].resolved, Some(at(400)));
    let stored = store
        .get_alert(&t.id, &x.id, &DeviceScope::All)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, "Resolved");
    assert_eq!(stored.resolved, Some(at(400)));
    assert_eq!(stored.last_update, at(400));
    assert_eq!(stored.classification.as_deref(), Some("TruePositive"));
    assert_eq!(stored.comments[0].created_by, "analyst@example");
    assert_eq!(stored.evidence.len(), 3, "resolving keeps the alert whole");
    let audit = store.audit_events(0, 10_000).await.unwrap();
    assert!(
        audit.iter().any(|(_, e)| e.event == "AlertUpdated"
            && e.subject == x.id
            && e.actor == "analyst@example"
            && e.detail
                .as_deref()
                .is_some_and(|d| d.contains("status=Resolved"))),
        "{audit:?}"
    );
    // Reopening clears resolvedTime.
    let reopen = AlertChange {
        status: Some(AlertStatus::InProgress),
        ..AlertChange::default()
    };
    let reopened = store
        .update_alerts(
            &t.id,
            &[x.id.clone()],
            &reopen,
            &DeviceScope::All,
            "a",
            at(410),
        )
        .await
        .unwrap();
    assert_eq!(reopened[0].resolved, None);
    store
        .update_alerts(
            &t.id,
            &[x.id.clone()],
            &resolve,
            &DeviceScope::All,
            "a",
            at(420),
        )
        .await
        .unwrap();

    // The same file after its alert was resolved: a new alert.
    raise(&web, vec![denial(500, "/tmp/x")], 510).await;
    let web_alerts = store
        .list_alerts(&t.id, &web_only, &Query::default())
        .await
        .unwrap();
    assert_eq!(web_alerts.items.len(), 2);
    assert_eq!(web_alerts.items[0].status, "New");

    // A protection gap is raised once, even after it was resolved.
    let gap = protection_gap_alert(&web, at(600), at(660), at(700));
    assert_eq!(
        store
            .raise_alerts(&t.id, &[gap.clone()], at(700))
            .await
            .unwrap(),
        1
    );
    let gap_alert = store
        .list_alerts(&t.id, &web_only, &Query::default())
        .await
        .unwrap()
        .items[0]
        .clone();
    store
        .update_alerts(
            &t.id,
            &[gap_alert.id.clone()],
            &resolve,
            &DeviceScope::All,
            "a",
            at(710),
        )
        .await
        .unwrap();
    assert_eq!(store.raise_alerts(&t.id, &[gap], at(720)).await.unwrap(), 0);

    // Silent restricted machines: once per silence.
    let info = DeviceInfo {
        os_platform: "Linux".into(),
        ..DeviceInfo::default()
    };
    let restricted = EnforcementState {
        restricted: true,
        ..EnforcementState::default()
    };
    store
        .record_heartbeat(&db.id, &info, &restricted, at(800))
        .await
        .unwrap();
    let silent = store
        .silent_restricted_machines(at(900), 100)
        .await
        .unwrap();
    let mine: Vec<_> = silent.iter().filter(|m| m.tenant_id == t.id).collect();
    assert_eq!(mine.len(), 1, "{silent:?}");
    assert_eq!(mine[0].id, db.id);
    assert!(store
        .silent_restricted_machines(at(700), 100)
        .await
        .unwrap()
        .iter()
        .all(|m| m.id != db.id));
    let alert = silence_alert(mine[0], at(800), at(900));
    store.raise_alerts(&t.id, &[alert], at(900)).await.unwrap();
    assert!(store
        .silent_restricted_machines(at(900), 100)
        .await
        .unwrap()
        .iter()
        .all(|m| m.id != db.id));

    // Retention by last update.
    let before = store
        .list_alerts(&t.id, &DeviceScope::All, &Query::default())
        .await
        .unwrap()
        .items
        .len();
    let deleted = store.delete_old_alerts(at(300), 1000).await.unwrap();
    assert!(deleted >= 1, "{deleted}");
    let after_retention = store
        .list_alerts(&t.id, &DeviceScope::All, &Query::default())
        .await
        .unwrap();
    assert!(after_retention.items.len() < before);
    assert!(after_retention
        .items
        .iter()
        .all(|a| a.last_update >= at(300)));
}
