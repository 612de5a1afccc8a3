//! The contract every [`Store`] implementation must pass, written once against the
//! trait so that SQLite and any later backend run the very same checks.
//!
//! Each check makes its own tenant, machines and ids, so the checks can share one store
//! and run in any order; [`run_all`] runs them in sequence. The two concurrency checks
//! take an `Arc` because they spawn tasks; [`durability_write`] and
//! [`durability_check`] bracket a close and reopen that only the caller can do.

mod alerts;
pub use alerts::alerts;

use std::collections::BTreeSet;
use std::sync::Arc;

use appfence_core::audit::AuditEvent;
use appfence_core::authz::IndicatorScope;
use appfence_core::grants::{ClientRegistration, OAuthGrant};
use appfence_core::ids::{new_guid, new_machine_id};
use appfence_core::odata::{
    ActionField, CmpOp, Direction, EventField, Expr, IndicatorField, MachineField, Page, Query,
    Value,
};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    ActionRecord, AppRegistration, AppSecret, AuditRecord, ConsoleSession, EnrollSecret,
    GroupAssignment, IndicatorSubmission, MachineRecord, SigningKey, StatusChange, Tenant,
    TransitionOutcome, UserRecord, MAX_EVENTS_PER_MACHINE,
};
use appfence_core::{Error, MachineRef};
use appfence_proto::agent::{Capabilities, DenialEvent, DenialKind, DeviceInfo, EnforcementState};
use appfence_proto::{ActionStatus, ActionType, Timestamp};

use crate::Store;

use ActionStatus::*;
use ActionType::*;

const TICKS_PER_SECOND: i64 = 10_000_000;

/// A fixed point in time the checks count from.
pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_ticks((1_750_000_000 + seconds) * TICKS_PER_SECOND)
}

// ---------------------------------------------------------------- fixtures

pub async fn new_tenant(store: &dyn Store) -> Tenant {
    let tenant = Tenant {
        id: new_guid(),
        name: format!("Contoso {}", &new_guid()[..8]),
    };
    store.ensure_tenant(&tenant).await.expect("ensure_tenant");
    tenant
}

pub fn machine_record(tenant_id: &str, dns_name: &str) -> MachineRecord {
    MachineRecord {
        tenant_id: tenant_id.to_string(),
        id: new_machine_id(),
        aad_device_id: new_guid(),
        computer_dns_name: dns_name.to_string(),
        first_seen: at(0),
        last_seen: None,
        os_platform: "Linux".into(),
        os_version: "22.04".into(),
        kernel_version: "6.8.0".into(),
        os_architecture: "x86_64".into(),
        agent_version: "0.1.0".into(),
        last_ip_address: Some("10.0.0.7".into()),
        ip_addresses: vec!["10.0.0.7".into(), "fe80::1".into()],
        health_status: "Active".into(),
        onboarding_status: "Onboarded".into(),
        machine_tags: vec!["prod".into(), "web tier".into()],
        rbac_group_id: 0,
        rbac_group_name: None,
        risk_score: "None".into(),
        exposure_level: "Low".into(),
        device_value: "Normal".into(),
        capabilities: Capabilities {
            can_restrict_execution: true,
            exec_permission_events: true,
            filesystem_marks: false,
            simulated: false,
        },
        enforcement: EnforcementState::default(),
        credential_sha256: random_sha256(),
        enrollment_key_sha256: Some(random_sha256()),
        offboarded: None,
    }
}

/// 64 random lower-case hex characters, the form of a stored SHA-256.
pub fn random_sha256() -> String {
    format!("{}{}", new_machine_id(), &new_machine_id()[..24])
}

pub async fn new_machine(store: &dyn Store, tenant: &Tenant, dns_name: &str) -> MachineRecord {
    let m = machine_record(&tenant.id, dns_name);
    store.insert_machine(&m).await.expect("insert_machine");
    m
}

pub fn action_record(
    m: &MachineRecord,
    action_type: ActionType,
    created: Timestamp,
) -> ActionRecord {
    ActionRecord {
        tenant_id: m.tenant_id.clone(),
        id: new_guid(),
        action_type,
        title: None,
        requestor: "alice@contoso.com".into(),
        requestor_comment: "contract check".into(),
        status: Pending,
        machine_id: m.id.clone(),
        computer_dns_name: m.computer_dns_name.clone(),
        created,
        last_update: created,
        cancellation_requestor: None,
        cancellation_comment: None,
        cancellation_time: None,
        error_h_result: 0,
        external_id: None,
        request_source: "PublicApi".into(),
        troubleshoot_info: None,
    }
}

/// Creates a `Pending` action, which must succeed.
pub async fn new_action(
    store: &dyn Store,
    m: &MachineRecord,
    action_type: ActionType,
    created: Timestamp,
) -> ActionRecord {
    let a = action_record(m, action_type, created);
    store.create_action(&a).await.expect("create_action");
    a
}

pub fn change(to: ActionStatus, at: Timestamp, actor: &str) -> StatusChange {
    StatusChange {
        to,
        at,
        actor: actor.to_string(),
        reason: None,
        error_h_result: None,
        troubleshoot_info: None,
        cancellation_comment: None,
    }
}

/// Makes a change that must apply, and returns the action after it.
pub async fn must_apply(store: &dyn Store, id: &str, c: StatusChange) -> ActionRecord {
    match store.transition(id, &c).await.expect("transition") {
        TransitionOutcome::Applied(a) => {
            assert_eq!(a.status, c.to);
            a
        }
        TransitionOutcome::Refused(a) => panic!("{:?} -> {:?} refused", a.status, c.to),
    }
}

fn is_duplicate<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::ActiveRequestAlreadyExists))
}

fn ids(actions: &[ActionRecord]) -> Vec<String> {
    actions.iter().map(|a| a.id.clone()).collect()
}

fn cmp<F>(field: F, op: CmpOp, value: Value) -> Expr<F> {
    Expr::Compare { field, op, value }
}

fn and<F>(a: Expr<F>, b: Expr<F>) -> Expr<F> {
    Expr::And(Box::new(a), Box::new(b))
}

fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

// ---------------------------------------------------------------- the checks

pub async fn tenants_apps_secrets_keys(store: &dyn Store) {
    let t = new_tenant(store).await;
    // Idempotent: a second call neither fails nor renames.
    let renamed = Tenant {
        id: t.id.clone(),
        name: "Other".into(),
    };
    store.ensure_tenant(&renamed).await.unwrap();
    assert_eq!(store.tenant(&t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(store.tenant(&new_guid()).await.unwrap(), None);
    let all = store.tenants().await.unwrap();
    assert_eq!(all.iter().filter(|x| x.id == t.id).count(), 1);

    let app = AppRegistration {
        tenant_id: t.id.clone(),
        client_id: new_guid(),
        display_name: "SOAR connector".into(),
        roles: vec![
            "Machine.RestrictExecution".into(),
            "Machine.Read.All".into(),
        ],
        created: at(1),
        disabled: None,
    };
    let first = app_secret(
        &app,
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        at(1),
        None,
    );
    store.insert_app(&app, Some(&first)).await.unwrap();
    assert_eq!(
        store.app(&t.id, &app.client_id).await.unwrap(),
        Some(app.clone())
    );
    assert_eq!(
        store.app_secrets(&t.id, &app.client_id).await.unwrap(),
        vec![first.clone()]
    );
    let other = new_tenant(store).await;
    assert_eq!(store.app(&other.id, &app.client_id).await.unwrap(), None);
    assert_eq!(store.app(&t.id, &new_guid()).await.unwrap(), None);
    assert!(store
        .app_secrets(&other.id, &app.client_id)
        .await
        .unwrap()
        .is_empty());
    // A public client has no secret.
    let public = AppRegistration {
        client_id: new_guid(),
        display_name: "Public".into(),
        ..app.clone()
    };
    store.insert_app(&public, None).await.unwrap();
    assert!(store
        .app_secrets(&t.id, &public.client_id)
        .await
        .unwrap()
        .is_empty());

    let secret = enroll_secret(&t.id, at(2));
    store.insert_enroll_secret(&secret).await.unwrap();
    assert_eq!(
        store.enroll_secret(&secret.secret_sha256).await.unwrap(),
        Some(secret)
    );
    assert_eq!(store.enroll_secret(&new_machine_id()).await.unwrap(), None);

    // A legacy (Argon2id) hash is replaced only while it is still the stored one.
    let fast = "sha256:0000";
    assert!(!store
        .replace_app_secret_hash(&t.id, &app.client_id, "not the hash", fast)
        .await
        .unwrap());
    assert!(store
        .replace_app_secret_hash(&t.id, &app.client_id, &first.secret_hash, fast)
        .await
        .unwrap());
    assert!(!store
        .replace_app_secret_hash(&t.id, &app.client_id, &first.secret_hash, "sha256:1111")
        .await
        .unwrap());
    assert_eq!(
        store.app_secrets(&t.id, &app.client_id).await.unwrap(),
        vec![AppSecret {
            secret_hash: fast.into(),
            ..first
        }]
    );
    assert!(!store
        .replace_app_secret_hash(&other.id, &app.client_id, fast, "x")
        .await
        .unwrap());
}

/// A secret of `app` with this hash, created at `created`.
pub fn app_secret(
    app: &AppRegistration,
    hash: &str,
    created: Timestamp,
    expires: Option<Timestamp>,
) -> AppSecret {
    AppSecret {
        id: new_guid(),
        tenant_id: app.tenant_id.clone(),
        client_id: app.client_id.clone(),
        secret_hash: hash.to_string(),
        hint: Some("abc".into()),
        created,
        expires,
    }
}

/// A new enrolment secret of the tenant: no expiry, no limit, unused.
pub fn enroll_secret(tenant_id: &str, created: Timestamp) -> EnrollSecret {
    EnrollSecret {
        id: new_guid(),
        tenant_id: tenant_id.to_string(),
        secret_sha256: random_sha256(),
        created,
        expires: None,
        max_uses: None,
        uses: 0,
        revoked: None,
    }
}

/// The audit events of `tenant_id` appended after sequence number `after`.
async fn tenant_events(store: &dyn Store, tenant_id: &str, after: i64) -> Vec<AuditEvent> {
    store
        .audit_events(after, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.tenant_id.as_deref() == Some(tenant_id))
        .collect()
}

/// The last sequence number of the audit log.
async fn audit_end(store: &dyn Store) -> i64 {
    store
        .audit_events(0, u32::MAX)
        .await
        .unwrap()
        .last()
        .map_or(0, |(s, _)| *s)
}

/// The password grant: off for a new tenant, turned on and off (audited once per
/// change, with its actor), per tenant, and `None` for an unknown tenant.
pub async fn password_grant_switch(store: &dyn Store) {
    use appfence_core::audit::{PASSWORD_GRANT_DISABLED, PASSWORD_GRANT_ENABLED};
    let t = new_tenant(store).await;
    let other = new_tenant(store).await;
    let start = audit_end(store).await;
    assert_eq!(store.password_grant(&t.id).await.unwrap(), Some(false));
    assert_eq!(
        store
            .set_password_grant(&t.id, true, "cli:ana", at(1))
            .await
            .unwrap(),
        Some(true)
    );
    // Again: no change, no event.
    store
        .set_password_grant(&t.id, true, "cli:bo", at(2))
        .await
        .unwrap();
    assert_eq!(store.password_grant(&t.id).await.unwrap(), Some(true));
    assert_eq!(store.password_grant(&other.id).await.unwrap(), Some(false));
    // A second ensure_tenant does not reset it.
    store.ensure_tenant(&t).await.unwrap();
    assert_eq!(store.password_grant(&t.id).await.unwrap(), Some(true));
    store
        .set_password_grant(&t.id, false, "cli:bo", at(3))
        .await
        .unwrap();
    assert_eq!(store.password_grant(&t.id).await.unwrap(), Some(false));
    let unknown = new_guid();
    assert_eq!(store.password_grant(&unknown).await.unwrap(), None);
    assert_eq!(
        store
            .set_password_grant(&unknown, true, "cli:ana", at(4))
            .await
            .unwrap(),
        None
    );
    let events: Vec<(String, String, String, Timestamp)> = tenant_events(store, &t.id, start)
        .await
        .into_iter()
        .map(|e| (e.event, e.subject, e.actor, e.at))
        .collect();
    assert_eq!(
        events,
        vec![
            (
                PASSWORD_GRANT_ENABLED.into(),
                t.id.clone(),
                "cli:ana".into(),
                at(1)
            ),
            (
                PASSWORD_GRANT_DISABLED.into(),
                t.id.clone(),
                "cli:bo".into(),
                at(3)
            ),
        ]
    );
}

/// Applications: listed by name within their tenant, several secrets each (a bound on
/// how many), secrets removed one by one, disabled and enabled (audited once per
/// change), deleted with their secrets; every change audited with its actor.
pub async fn app_lifecycle(store: &dyn Store) {
    use appfence_core::audit::*;
    let start = audit_end(store).await;
    let t = new_tenant(store).await;
    let other = new_tenant(store).await;
    let app = |name: &str, tenant: &Tenant| AppRegistration {
        tenant_id: tenant.id.clone(),
        client_id: new_guid(),
        display_name: name.into(),
        roles: vec!["Machine.Read.All".into()],
        created: at(1),
        disabled: None,
    };
    let soar = app("SOAR", &t);
    let backup = app("Backup", &t);
    let elsewhere = app("Elsewhere", &other);
    let first = app_secret(&soar, "sha256:01", at(1), Some(at(100)));
    store.insert_app(&soar, Some(&first)).await.unwrap();
    store.insert_app(&backup, None).await.unwrap();
    store.insert_app(&elsewhere, None).await.unwrap();
    assert_eq!(
        store.apps(&t.id).await.unwrap(),
        vec![backup.clone(), soar.clone()],
        "by display name, only the tenant's"
    );

    // A second secret (rotation), then up to the bound.
    let second = app_secret(&soar, "sha256:02", at(2), None);
    store.add_app_secret(&second, 3, "cli:ana").await.unwrap();
    assert_eq!(
        store.app_secrets(&t.id, &soar.client_id).await.unwrap(),
        vec![first.clone(), second.clone()],
        "oldest first"
    );
    store
        .add_app_secret(&app_secret(&soar, "sha256:03", at(3), None), 3, "cli:ana")
        .await
        .unwrap();
    match store
        .add_app_secret(&app_secret(&soar, "sha256:04", at(4), None), 3, "cli:ana")
        .await
    {
        Err(Error::BadRequest(m)) => assert!(m.contains("already has 3 secrets"), "{m}"),
        other => panic!("expected BadRequest, got {other:?}"),
    }
    // No such application (in this tenant).
    let mut stray = app_secret(&elsewhere, "sha256:05", at(4), None);
    stray.tenant_id = t.id.clone();
    assert!(matches!(
        store.add_app_secret(&stray, 3, "cli:ana").await,
        Err(Error::ResourceNotFound(_))
    ));
    assert_eq!(
        store
            .app_secrets(&t.id, &soar.client_id)
            .await
            .unwrap()
            .len(),
        3
    );

    // Removing: only the application's own secret, once.
    assert!(!store
        .remove_app_secret(&t.id, &backup.client_id, &first.id, "cli:ana", at(5))
        .await
        .unwrap());
    assert!(store
        .remove_app_secret(&t.id, &soar.client_id, &first.id, "cli:ana", at(5))
        .await
        .unwrap());
    assert!(!store
        .remove_app_secret(&t.id, &soar.client_id, &first.id, "cli:ana", at(5))
        .await
        .unwrap());
    let left = store.app_secrets(&t.id, &soar.client_id).await.unwrap();
    assert_eq!(left.len(), 2);
    assert_eq!(left[0], second);

    // Disable twice, enable twice: two events.
    let disabled = store
        .set_app_disabled(&t.id, &soar.client_id, true, "cli:ana", at(6))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(disabled.disabled, Some(at(6)));
    let again = store
        .set_app_disabled(&t.id, &soar.client_id, true, "cli:ana", at(7))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.disabled, Some(at(6)), "disabled since the first time");
    assert_eq!(
        store
            .app(&t.id, &soar.client_id)
            .await
            .unwrap()
            .unwrap()
            .disabled,
        Some(at(6))
    );
    let enabled = store
        .set_app_disabled(&t.id, &soar.client_id, false, "cli:bo", at(8))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(enabled.disabled, None);
    assert_eq!(
        store
            .set_app_disabled(&t.id, &soar.client_id, false, "cli:bo", at(9))
            .await
            .unwrap(),
        Some(enabled)
    );
    assert_eq!(
        store
            .set_app_disabled(&other.id, &soar.client_id, true, "cli:bo", at(9))
            .await
            .unwrap(),
        None,
        "another tenant's application"
    );

    // Deleting: the application and its secrets, once.
    assert!(!store
        .delete_app(&other.id, &soar.client_id, "cli:bo", at(10))
        .await
        .unwrap());
    assert!(store
        .delete_app(&t.id, &soar.client_id, "cli:bo", at(10))
        .await
        .unwrap());
    assert!(!store
        .delete_app(&t.id, &soar.client_id, "cli:bo", at(10))
        .await
        .unwrap());
    assert_eq!(store.app(&t.id, &soar.client_id).await.unwrap(), None);
    assert!(store
        .app_secrets(&t.id, &soar.client_id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.apps(&t.id).await.unwrap(), vec![backup.clone()]);
    assert_eq!(store.apps(&other.id).await.unwrap(), vec![elsewhere]);

    let events = tenant_events(store, &t.id, start).await;
    let summary: Vec<(&str, &str, &str, Timestamp)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.subject.as_str(), e.actor.as_str(), e.at))
        .collect();
    let c = soar.client_id.as_str();
    assert_eq!(
        summary,
        vec![
            (APP_SECRET_ADDED, c, "cli:ana", at(2)),
            (APP_SECRET_ADDED, c, "cli:ana", at(3)),
            (APP_SECRET_REMOVED, c, "cli:ana", at(5)),
            (APP_DISABLED, c, "cli:ana", at(6)),
            (APP_ENABLED, c, "cli:bo", at(8)),
            (APP_DELETED, c, "cli:bo", at(10)),
        ]
    );
    assert_eq!(
        events[0].detail.as_deref(),
        Some(format!("secret {}, never expires", second.id).as_str())
    );
    assert_eq!(
        events[2].detail.as_deref(),
        Some(format!("secret {}", first.id).as_str())
    );
}

/// Users: found by object id, listed by UPN, disabled and enabled (disabling ends
/// their console sessions), given a new password or new groups (ending their
/// sessions), deleted with their sessions; every change audited.
pub async fn user_lifecycle(store: &dyn Store) {
    use appfence_core::audit::*;
    let start = audit_end(store).await;
    let t = new_tenant(store).await;
    let other = new_tenant(store).await;
    let user = |upn: &str, tenant: &Tenant| UserRecord {
        tenant_id: tenant.id.clone(),
        object_id: new_guid(),
        upn: upn.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        groups: vec!["g-analysts".into()],
        created: at(1),
        disabled: None,
    };
    let ana = user("ana@example.com", &t);
    let bo = user("bo@example.com", &t);
    let cy = user("cy@example.com", &other);
    for u in [&bo, &ana, &cy] {
        store.insert_user(u).await.unwrap();
    }
    assert_eq!(
        store.users(&t.id).await.unwrap(),
        vec![ana.clone(), bo.clone()]
    );
    assert_eq!(
        store
            .user_by_object_id(&t.id, &ana.object_id)
            .await
            .unwrap(),
        Some(ana.clone())
    );
    assert_eq!(
        store
            .user_by_object_id(&other.id, &ana.object_id)
            .await
            .unwrap(),
        None
    );
    let session = |u: &UserRecord| console_session(&u.tenant_id, &u.object_id, at(1));
    async fn sessions_of(store: &dyn Store, u: &UserRecord) -> appfence_core::Result<u64> {
        store
            .count_console_sessions_of_user(&u.tenant_id, &u.object_id)
            .await
    }
    for u in [&ana, &ana, &bo] {
        store.insert_console_session(&session(u)).await.unwrap();
    }
    assert_eq!(sessions_of(store, &ana).await.unwrap(), 2);

    // Disabling ends the sessions; a second time changes nothing.
    let disabled = store
        .set_user_disabled(&t.id, "ANA@example.com", true, "cli:root", at(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(disabled.disabled, Some(at(2)));
    assert_eq!(sessions_of(store, &ana).await.unwrap(), 0);
    assert_eq!(sessions_of(store, &bo).await.unwrap(), 1);
    let again = store
        .set_user_disabled(&t.id, "ana@example.com", true, "cli:root", at(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.disabled, Some(at(2)));
    assert_eq!(
        store
            .user_by_object_id(&t.id, &ana.object_id)
            .await
            .unwrap()
            .unwrap()
            .disabled,
        Some(at(2))
    );
    assert_eq!(
        store
            .set_user_disabled(&other.id, "ana@example.com", true, "cli:root", at(3))
            .await
            .unwrap(),
        None
    );
    let enabled = store
        .set_user_disabled(&t.id, "ana@example.com", false, "cli:root", at(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(enabled.disabled, None);
    assert_eq!(
        store.user(&t.id, "ana@example.com").await.unwrap(),
        Some(ana.clone())
    );

    // A new password, new groups: each ends the sessions.
    store.insert_console_session(&session(&ana)).await.unwrap();
    assert!(store
        .set_user_password(&t.id, "ana@example.com", "$argon2id$new", "cli:root", at(5))
        .await
        .unwrap());
    assert!(!store
        .set_user_password(
            &t.id,
            "nobody@example.com",
            "$argon2id$new",
            "cli:root",
            at(5)
        )
        .await
        .unwrap());
    assert_eq!(sessions_of(store, &ana).await.unwrap(), 0);
    assert_eq!(
        store
            .user(&t.id, "ana@example.com")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );
    store.insert_console_session(&session(&ana)).await.unwrap();
    let groups = vec!["g-viewers".to_string(), "g-servers".to_string()];
    let regrouped = store
        .set_user_groups(&t.id, "ana@example.com", &groups, "cli:root", at(6))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(regrouped.groups, groups);
    assert_eq!(
        store
            .user(&t.id, "ana@example.com")
            .await
            .unwrap()
            .unwrap()
            .groups,
        groups
    );
    assert_eq!(sessions_of(store, &ana).await.unwrap(), 0);
    assert_eq!(
        store
            .set_user_groups(&t.id, "nobody@example.com", &groups, "cli:root", at(6))
            .await
            .unwrap(),
        None
    );

    // Deleting: the user and their sessions, once; the UPN is free again.
    store.insert_console_session(&session(&bo)).await.unwrap();
    assert!(store
        .delete_user(&t.id, "BO@example.com", "cli:root", at(7))
        .await
        .unwrap());
    assert!(!store
        .delete_user(&t.id, "bo@example.com", "cli:root", at(7))
        .await
        .unwrap());
    assert_eq!(sessions_of(store, &bo).await.unwrap(), 0);
    assert_eq!(store.user(&t.id, "bo@example.com").await.unwrap(), None);
    assert_eq!(
        store.user_by_object_id(&t.id, &bo.object_id).await.unwrap(),
        None
    );
    store
        .insert_user(&UserRecord {
            object_id: new_guid(),
            ..bo.clone()
        })
        .await
        .unwrap();
    assert_eq!(store.users(&other.id).await.unwrap(), vec![cy]);

    let events = tenant_events(store, &t.id, start).await;
    let summary: Vec<(&str, &str, Timestamp)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.subject.as_str(), e.at))
        .collect();
    assert_eq!(
        summary,
        vec![
            (USER_DISABLED, "ana@example.com", at(2)),
            (USER_ENABLED, "ana@example.com", at(4)),
            (USER_PASSWORD_CHANGED, "ana@example.com", at(5)),
            (USER_GROUPS_CHANGED, "ana@example.com", at(6)),
            (USER_DELETED, "bo@example.com", at(7)),
        ]
    );
    assert!(events.iter().all(|e| e.actor == "cli:root"));
    assert_eq!(
        events[3].detail.as_deref(),
        Some(
            format!(
                "oid {}; groups [g-analysts] -> [g-viewers, g-servers]",
                ana.object_id
            )
            .as_str()
        )
    );
}

/// Enrolment secrets: listed per tenant, revoked once (audited), and used only while
/// usable: not revoked, not expired, below their maximum; a use can be given back.
pub async fn enroll_secret_lifecycle(store: &dyn Store) {
    use appfence_core::audit::ENROLL_SECRET_REVOKED;
    let start = audit_end(store).await;
    let t = new_tenant(store).await;
    let other = new_tenant(store).await;
    let open = enroll_secret(&t.id, at(1));
    let limited = EnrollSecret {
        max_uses: Some(2),
        ..enroll_secret(&t.id, at(2))
    };
    let expiring = EnrollSecret {
        expires: Some(at(10)),
        ..enroll_secret(&t.id, at(3))
    };
    let theirs = enroll_secret(&other.id, at(1));
    for s in [&expiring, &open, &limited, &theirs] {
        store.insert_enroll_secret(s).await.unwrap();
    }
    assert_eq!(
        store.enroll_secrets(&t.id).await.unwrap(),
        vec![open.clone(), limited.clone(), expiring.clone()]
    );

    // Uses up to the maximum; a use given back can be used again.
    assert!(store
        .claim_enroll_secret_use(&limited.id, at(5))
        .await
        .unwrap());
    assert!(store
        .claim_enroll_secret_use(&limited.id, at(5))
        .await
        .unwrap());
    assert!(!store
        .claim_enroll_secret_use(&limited.id, at(5))
        .await
        .unwrap());
    store.release_enroll_secret_use(&limited.id).await.unwrap();
    assert!(store
        .claim_enroll_secret_use(&limited.id, at(5))
        .await
        .unwrap());
    let found = store
        .enroll_secret(&limited.secret_sha256)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.uses, 2);
    assert_eq!(
        found.usable(at(5)),
        Err(appfence_core::records::EnrollSecretRefusal::UsedUp)
    );
    // Until it expires (exclusive).
    assert!(store
        .claim_enroll_secret_use(&expiring.id, at(9))
        .await
        .unwrap());
    assert!(!store
        .claim_enroll_secret_use(&expiring.id, at(10))
        .await
        .unwrap());
    // Without a limit, any number.
    for _ in 0..5 {
        assert!(store
            .claim_enroll_secret_use(&open.id, at(20))
            .await
            .unwrap());
    }
    // Giving back never goes below zero.
    let fresh = enroll_secret(&t.id, at(4));
    store.insert_enroll_secret(&fresh).await.unwrap();
    store.release_enroll_secret_use(&fresh.id).await.unwrap();
    assert_eq!(
        store
            .enroll_secret(&fresh.secret_sha256)
            .await
            .unwrap()
            .unwrap()
            .uses,
        0
    );

    // Revoking: the tenant's own secret only, once; then it is never used.
    assert_eq!(
        store
            .revoke_enroll_secret(&other.id, &open.id, "cli:root", at(21))
            .await
            .unwrap(),
        None
    );
    let revoked = store
        .revoke_enroll_secret(&t.id, &open.id, "cli:root", at(21))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked, Some(at(21)));
    assert_eq!(revoked.uses, 5);
    let again = store
        .revoke_enroll_secret(&t.id, &open.id, "cli:root", at(22))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked, Some(at(21)));
    assert!(!store
        .claim_enroll_secret_use(&open.id, at(23))
        .await
        .unwrap());
    assert!(store
        .claim_enroll_secret_use(&theirs.id, at(23))
        .await
        .unwrap());

    let events = tenant_events(store, &t.id, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, ENROLL_SECRET_REVOKED);
    assert_eq!(events[0].subject, open.id);
    assert_eq!(events[0].at, at(21));
}

/// Many enrolments at once with a secret good for 5 devices: exactly 5 are counted.
pub async fn enroll_secret_claims_under_concurrency(store: Arc<dyn Store>) {
    let t = new_tenant(store.as_ref()).await;
    let secret = EnrollSecret {
        max_uses: Some(5),
        ..enroll_secret(&t.id, at(1))
    };
    store.insert_enroll_secret(&secret).await.unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            let id = secret.id.clone();
            tokio::spawn(async move { store.claim_enroll_secret_use(&id, at(2)).await.unwrap() })
        })
        .collect();
    let mut claimed = 0;
    for task in tasks {
        claimed += usize::from(task.await.unwrap());
    }
    assert_eq!(claimed, 5);
    assert_eq!(
        store
            .enroll_secret(&secret.secret_sha256)
            .await
            .unwrap()
            .unwrap()
            .uses,
        5
    );
}

/// A sealed key as the server would store it (the bytes are not a real sealing).
pub fn sealed_key(activates: Timestamp) -> SigningKey {
    SigningKey {
        kid: new_guid(),
        algorithm: "EdDSA".into(),
        public_key: (0..32).collect(),
        sealed_private_key: Some(vec![7; 72]),
        kek_id: Some("0123456789abcdef".into()),
        created: activates,
        activates,
        verify_until: None,
        retired: None,
    }
}

fn find<'a>(keys: &'a [SigningKey], kid: &str) -> &'a SigningKey {
    keys.iter()
        .find(|k| k.kid == kid)
        .expect("the key is listed")
}

pub async fn signing_keys(store: &dyn Store) {
    // Keys are server-wide: start from whatever the store holds.
    let before = store.signing_keys().await.unwrap();
    let newest = appfence_core::signing_keys::newest_unretired(&before).map(|k| k.kid.clone());
    let a = sealed_key(at(100));
    assert!(store
        .add_signing_key(&a, newest.as_deref(), at(5000))
        .await
        .unwrap());
    // A rotation that read the keys before `a` was added loses.
    let late = sealed_key(at(101));
    assert!(!store
        .add_signing_key(&late, newest.as_deref(), at(6000))
        .await
        .unwrap());
    let keys = store.signing_keys().await.unwrap();
    assert!(keys.iter().all(|k| k.kid != late.kid));
    assert_eq!(find(&keys, &a.kid), &a, "stored as given");
    if let Some(old) = &newest {
        assert_eq!(find(&keys, old).verify_until, Some(at(5000)));
    }

    let b = sealed_key(at(200));
    assert!(store
        .add_signing_key(&b, Some(&a.kid), at(9000))
        .await
        .unwrap());
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys[0].kid, b.kid, "newest first");
    assert_eq!(keys[1].kid, a.kid);
    assert_eq!(find(&keys, &a.kid).verify_until, Some(at(9000)));
    if let Some(old) = &newest {
        assert_eq!(
            find(&keys, old).verify_until,
            Some(at(5000)),
            "an end once set stays"
        );
    }

    // Retiring destroys the private part, once.
    assert!(store
        .retire_signing_key(&b.kid, at(300), "keys retire")
        .await
        .unwrap());
    assert!(!store
        .retire_signing_key(&b.kid, at(301), "keys retire")
        .await
        .unwrap());
    assert!(!store
        .retire_signing_key("no-such-kid", at(301), "x")
        .await
        .unwrap());
    let keys = store.signing_keys().await.unwrap();
    let retired = find(&keys, &b.kid);
    assert_eq!(retired.retired, Some(at(300)));
    assert_eq!(retired.sealed_private_key, None);
    assert_eq!(retired.verify_until, Some(at(300)));
    assert_eq!(
        retired.public_key, b.public_key,
        "the public part stays, for the record"
    );
    // The newest unretired key is `a` again: a rotation must name it.
    let c = sealed_key(at(400));
    assert!(!store
        .add_signing_key(&c, Some(&b.kid), at(9500))
        .await
        .unwrap());
    assert!(store
        .add_signing_key(&c, Some(&a.kid), at(9500))
        .await
        .unwrap());

    // An unsealed key is never stored.
    let mut plain = sealed_key(at(500));
    plain.sealed_private_key = None;
    assert!(store
        .add_signing_key(&plain, Some(&c.kid), at(1))
        .await
        .is_err());

    let events = store.audit_events(0, 10_000).await.unwrap();
    let about = |kid: &str, event: &str| {
        events
            .iter()
            .filter(|(_, e)| e.subject == kid && e.event == event)
            .count()
    };
    assert_eq!(about(&a.kid, appfence_core::audit::SIGNING_KEY_ADDED), 1);
    assert_eq!(about(&late.kid, appfence_core::audit::SIGNING_KEY_ADDED), 0);
    assert_eq!(about(&b.kid, appfence_core::audit::SIGNING_KEY_RETIRED), 1);
    let (_, retire) = events
        .iter()
        .find(|(_, e)| e.subject == b.kid && e.event == appfence_core::audit::SIGNING_KEY_RETIRED)
        .unwrap();
    assert_eq!(retire.actor, "keys retire");
    assert_eq!(retire.tenant_id, None);
}

/// Replicas rotating at the same moment add exactly one key.
pub async fn concurrent_rotations(store: Arc<dyn Store>) {
    let keys = store.signing_keys().await.unwrap();
    let newest = appfence_core::signing_keys::newest_unretired(&keys).map(|k| k.kid.clone());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let newest = newest.clone();
            tokio::spawn(async move {
                store
                    .add_signing_key(&sealed_key(at(1000)), newest.as_deref(), at(9000))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(store.signing_keys().await.unwrap().len(), keys.len() + 1);
}

pub async fn sign_in_throttle(store: &dyn Store) {
    use appfence_core::audit::{ACCOUNT_UNLOCKED, SIGN_IN_LOCKOUT_ENDED, SIGN_IN_LOCKOUT_STARTED};
    use appfence_core::sign_in_throttle::{SignInAccount, ThrottlePolicy, Verdict};
    let policy = ThrottlePolicy::default();
    let t = new_tenant(store).await;
    let ana = SignInAccount::new(&t.id, "Ana@Corp.Example");
    let bo = SignInAccount::new(&t.id, "bo@corp.example");
    let addr = format!("addr:{}", new_guid());
    let seq_before = store
        .audit_events(0, 100_000)
        .await
        .unwrap()
        .last()
        .map_or(0, |(s, _)| *s);

    for i in 0..9 {
        let f = store
            .record_sign_in_failure(Some(&ana), &addr, "192.0.2.1", &policy, at(i))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.locked_until, None);
        assert_eq!(f.record.failures, i as u32 + 1);
    }
    let tenth = store
        .record_sign_in_failure(Some(&ana), &addr, "192.0.2.1", &policy, at(9))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tenth.locked_until, Some(at(69)));
    // Another account on the same tenant is untouched; the address counted all ten.
    store
        .record_sign_in_failure(Some(&bo), &addr, "192.0.2.1", &policy, at(10))
        .await
        .unwrap();
    let read = store
        .sign_in_throttle(&[ana.key(), bo.key(), addr.clone(), "addr:none".into()])
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    let get = |k: &str| read.iter().find(|r| r.key == k).cloned();
    assert_eq!(
        policy.account_verdict(get(&ana.key()).as_ref(), at(68)),
        Verdict::Locked(at(69))
    );
    assert_eq!(
        policy.account_verdict(get(&bo.key()).as_ref(), at(68)),
        Verdict::Allowed
    );
    assert_eq!(get(&addr).unwrap().failures, 11);
    // An address alone (a client secret) counts only the address.
    assert_eq!(
        store
            .record_sign_in_failure(None, &addr, "192.0.2.1", &policy, at(11))
            .await
            .unwrap(),
        None
    );

    // The lockout is in the audit log once; its end is recorded once, after it.
    assert!(store
        .sweep_sign_in_throttle(&policy, at(68))
        .await
        .unwrap()
        .is_empty());
    let ended = store.sweep_sign_in_throttle(&policy, at(69)).await.unwrap();
    assert_eq!(ended, vec![ana.clone()]);
    assert!(store
        .sweep_sign_in_throttle(&policy, at(70))
        .await
        .unwrap()
        .is_empty());
    let events: Vec<_> = store
        .audit_events(seq_before, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.tenant_id.as_deref() == Some(t.id.as_str()))
        .collect();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.event.as_str(), e.subject.as_str()))
            .collect::<Vec<_>>(),
        [
            (SIGN_IN_LOCKOUT_STARTED, "ana@corp.example"),
            (SIGN_IN_LOCKOUT_ENDED, "ana@corp.example")
        ]
    );
    assert_eq!(events[0].at, at(9));
    assert_eq!(events[1].at, at(69));

    // The level stays after the lock (the next one doubles), until a success clears it.
    for i in 0..10 {
        store
            .record_sign_in_failure(Some(&ana), &addr, "192.0.2.1", &policy, at(100 + i))
            .await
            .unwrap();
    }
    let r = store.sign_in_throttle(&[ana.key()]).await.unwrap();
    assert_eq!(r[0].locked_until, Some(at(109 + 120)));
    assert!(store
        .unlock_account(&ana, "user unlock", at(110))
        .await
        .unwrap());
    assert!(!store
        .unlock_account(&ana, "user unlock", at(111))
        .await
        .unwrap());
    assert!(store
        .sign_in_throttle(&[ana.key()])
        .await
        .unwrap()
        .is_empty());
    let unlocked = store.audit_events(seq_before, 100).await.unwrap();
    assert!(unlocked
        .iter()
        .any(|(_, e)| e.event == ACCOUNT_UNLOCKED && e.actor == "user unlock"));
    store.clear_sign_in_failures(&bo).await.unwrap();
    assert!(store
        .sign_in_throttle(&[bo.key()])
        .await
        .unwrap()
        .is_empty());
    // A success right after a lockout, before any sweep: its end is still recorded.
    let cy = SignInAccount::new(&t.id, "cy@corp.example");
    for i in 0..10 {
        store
            .record_sign_in_failure(Some(&cy), &addr, "192.0.2.1", &policy, at(200 + i))
            .await
            .unwrap();
    }
    store.clear_sign_in_failures(&cy).await.unwrap();
    let ends: Vec<_> = store
        .audit_events(seq_before, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.subject == "cy@corp.example")
        .map(|(_, e)| (e.event, e.at))
        .collect();
    assert_eq!(
        ends,
        [
            (SIGN_IN_LOCKOUT_STARTED.to_string(), at(209)),
            (SIGN_IN_LOCKOUT_ENDED.to_string(), at(269))
        ]
    );

    // Counters that no longer matter are deleted by the sweep.
    store
        .record_sign_in_failure(Some(&bo), &addr, "192.0.2.1", &policy, at(1000))
        .await
        .unwrap();
    store
        .sweep_sign_in_throttle(&policy, at(1000 + 599))
        .await
        .unwrap();
    assert_eq!(
        store
            .sign_in_throttle(&[bo.key(), addr.clone()])
            .await
            .unwrap()
            .len(),
        2
    );
    store
        .sweep_sign_in_throttle(&policy, at(1000 + 600))
        .await
        .unwrap();
    assert!(store
        .sign_in_throttle(&[bo.key(), addr.clone()])
        .await
        .unwrap()
        .is_empty());
}

/// What a device reports in a heartbeat, with these addresses.
fn info_with_ips(ips: &[&str]) -> DeviceInfo {
    DeviceInfo {
        os_platform: "Linux".into(),
        ip_addresses: ips.iter().map(|s| s.to_string()).collect(),
        ..DeviceInfo::default()
    }
}

pub async fn address_history(store: &dyn Store) {
    let t = new_tenant(store).await;
    // Enrolled at t0 with 10.0.0.7 and fe80::1 (machine_record's addresses).
    let mut m = machine_record(&t.id, "addr-01.corp.example");
    m.last_seen = Some(at(0));
    store.insert_machine(&m).await.unwrap();
    let other = new_machine(store, &t, "addr-02.corp.example").await;
    let tenant_id = t.id.as_str();
    let seen = |ip: &'static str, from: i64, to: i64| async move {
        store
            .machines_seen_with_ip(tenant_id, ip, at(from), at(to))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.computer_dns_name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seen("10.0.0.7", -10, 10).await,
        ["addr-01.corp.example", "addr-02.corp.example"]
    );
    // Heartbeats every 30 s for ten minutes, then the device moves to 10.0.0.8.
    let hb = |ips: &'static [&'static str], seconds: i64| {
        let id = m.id.clone();
        async move {
            store
                .record_heartbeat(
                    &id,
                    &info_with_ips(ips),
                    &EnforcementState::default(),
                    at(seconds),
                )
                .await
                .unwrap()
        }
    };
    for i in 1..=20 {
        hb(&["10.0.0.7"], i * 30).await;
    }
    for i in 21..=40 {
        hb(&["10.0.0.8", "2001:DB8:0:0::1"], i * 30).await;
    }
    let only_01 = vec!["addr-01.corp.example".to_string()];
    // The old address: within the stretch, and not long after it.
    assert!(seen("10.0.0.7", 500, 560).await.contains(&only_01[0]));
    assert!(
        !seen("10.0.0.7", 700, 1300).await.contains(&only_01[0]),
        "moved away at 630 s"
    );
    assert_eq!(seen("10.0.0.8", 900, 960).await, only_01);
    assert_eq!(seen("10.0.0.8", 0, 600).await, Vec::<String>::new());
    // IPv6 in any notation finds the canonical form.
    assert_eq!(seen("2001:db8::1", 1000, 1100).await, only_01);
    assert_eq!(seen("2001:0db8:0000::0001", 1000, 1100).await, only_01);
    assert_eq!(seen("not an ip", 0, 2000).await, Vec::<String>::new());
    // Another tenant's lookup finds nothing.
    let t2 = new_tenant(store).await;
    assert!(store
        .machines_seen_with_ip(&t2.id, "10.0.0.7", at(-10), at(10))
        .await
        .unwrap()
        .is_empty());
    // A gap of more than 15 minutes starts a new stretch: the time between is empty.
    hb(&["10.0.0.8"], 1200 + 20 * 60).await;
    assert_eq!(seen("10.0.0.8", 1300, 1400).await, Vec::<String>::new());
    assert_eq!(seen("10.0.0.8", 2390, 2410).await, only_01);
    // Pruning keeps what ended at or after the bound.
    assert!(store.prune_address_history(at(1300)).await.unwrap() >= 2);
    assert_eq!(seen("10.0.0.7", -10, 10).await, Vec::<String>::new());
    assert_eq!(seen("10.0.0.8", 2390, 2410).await, only_01);
    let _ = other;
}

pub async fn machine_tags(store: &dyn Store) {
    let t = new_tenant(store).await;
    let a = new_machine(store, &t, "tag-a.corp.example").await; // tags: prod, web tier
    let b = new_machine(store, &t, "tag-b.corp.example").await;
    let names = |ms: Vec<MachineRecord>| {
        ms.into_iter()
            .map(|m| m.computer_dns_name)
            .collect::<Vec<_>>()
    };
    let group_of = |m: &MachineRecord| {
        if m.machine_tags.iter().any(|t| t == "Quarantine") {
            (7, Some("Quarantined".to_string()))
        } else {
            (0, None)
        }
    };
    let changed = store
        .change_machine_tag(&t.id, &[a.id.clone()], "Quarantine", true, &group_of)
        .await
        .unwrap();
    assert_eq!(changed[0].machine_tags, ["prod", "web tier", "Quarantine"]);
    assert_eq!(
        (
            changed[0].rbac_group_id,
            changed[0].rbac_group_name.as_deref()
        ),
        (7, Some("Quarantined"))
    );
    // Adding it again, in another case, changes nothing.
    let again = store
        .change_machine_tag(&t.id, &[a.id.clone()], "QUARANTINE", true, &group_of)
        .await
        .unwrap();
    assert_eq!(again[0].machine_tags, ["prod", "web tier", "Quarantine"]);
    let stored = store
        .machine(&t.id, &MachineRef::Id(a.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.machine_tags, again[0].machine_tags);
    assert_eq!(stored.rbac_group_id, 7);

    assert_eq!(
        names(
            store
                .machines_with_tag(&t.id, "quarantine", false)
                .await
                .unwrap()
        ),
        ["tag-a.corp.example"]
    );
    assert_eq!(
        names(store.machines_with_tag(&t.id, "quar", false).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        names(store.machines_with_tag(&t.id, "QUAR", true).await.unwrap()),
        ["tag-a.corp.example"]
    );
    assert_eq!(
        names(store.machines_with_tag(&t.id, "PROD", false).await.unwrap()),
        ["tag-a.corp.example", "tag-b.corp.example"]
    );
    assert_eq!(
        names(store.machines_with_tag(&t.id, "", true).await.unwrap()).len(),
        2
    );
    // Percent and underscore are not patterns.
    assert!(store
        .machines_with_tag(&t.id, "%", true)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .machines_with_tag(&new_tenant(store).await.id, "prod", false)
        .await
        .unwrap()
        .is_empty());

    // Removing from both; an unknown id changes nothing at all.
    let unknown = new_machine_id();
    let err = store
        .change_machine_tag(
            &t.id,
            &[b.id.clone(), unknown.clone()],
            "prod",
            false,
            &group_of,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ResourceNotFound(ref m) if m.contains(&unknown)),
        "{err:?}"
    );
    assert_eq!(
        store
            .machines_with_tag(&t.id, "prod", false)
            .await
            .unwrap()
            .len(),
        2
    );
    let removed = store
        .change_machine_tag(
            &t.id,
            &[a.id.clone(), b.id.clone()],
            "Prod",
            false,
            &group_of,
        )
        .await
        .unwrap();
    assert_eq!(removed[0].machine_tags, ["web tier", "Quarantine"]);
    assert_eq!(removed[1].machine_tags, ["web tier"]);
    assert!(store
        .machines_with_tag(&t.id, "prod", false)
        .await
        .unwrap()
        .is_empty());
}

pub async fn rate_limits(store: &dyn Store) {
    use appfence_core::ratelimit::RateLimitPolicy;
    let policy = RateLimitPolicy {
        per_minute: 3,
        per_hour: 5,
    };
    let key = format!("{}|app|listMachines", new_guid());
    // A point well inside a minute (`at` is 2024-01-01T00:00:00Z).
    let minute0 = at(60 * 10 + 5);
    let admitted = |d: &appfence_core::ratelimit::Decision| d.admitted;
    for i in 0..3 {
        let d = store.rate_limit(&key, &policy, minute0).await.unwrap();
        assert!(admitted(&d), "call {i}");
        assert_eq!(d.remaining, 2 - i as u32);
    }
    // Refused calls do not count, in either window (the hour's two left stay).
    for _ in 0..4 {
        let r = store.rate_limit(&key, &policy, minute0).await.unwrap();
        assert!(!r.admitted && r.window.name == "minute", "{r:?}");
    }
    let refused = store.rate_limit(&key, &policy, minute0).await.unwrap();
    assert!(!refused.admitted);
    assert_eq!(refused.window.name, "minute");
    assert_eq!(
        refused.reset,
        appfence_core::ratelimit::until_window_end(minute0, std::time::Duration::from_secs(60))
    );
    // Another key is not affected.
    assert!(
        store
            .rate_limit(&format!("{key}x"), &policy, minute0)
            .await
            .unwrap()
            .admitted
    );
    // The next minute: two more, then the hour's limit.
    let minute1 = at(60 * 11 + 5);
    assert!(
        store
            .rate_limit(&key, &policy, minute1)
            .await
            .unwrap()
            .admitted
    );
    assert!(
        store
            .rate_limit(&key, &policy, minute1)
            .await
            .unwrap()
            .admitted
    );
    let hour = store.rate_limit(&key, &policy, minute1).await.unwrap();
    assert!(!hour.admitted);
    assert_eq!(hour.window.name, "hour");
    // Still the hour, in a later minute too, until it ends.
    let minute2 = at(60 * 12 + 5);
    let still = store.rate_limit(&key, &policy, minute2).await.unwrap();
    assert!(!still.admitted && still.window.name == "hour", "{still:?}");
    assert_eq!(
        still.reset,
        appfence_core::ratelimit::until_window_end(minute2, std::time::Duration::from_secs(3600))
    );
    // Windows that are over can be pruned; a new hour starts afresh.
    let later = at(2 * 3600 + 5);
    let pruned = store
        .prune_rate_windows(later.minus(std::time::Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(pruned >= 3, "{pruned}");
    assert!(
        store
            .rate_limit(&key, &policy, later)
            .await
            .unwrap()
            .admitted
    );
}

/// Many calls of one key at once: exactly the limit admitted.
pub async fn rate_limits_under_concurrency(store: Arc<dyn Store>) {
    use appfence_core::ratelimit::RateLimitPolicy;
    let policy = RateLimitPolicy {
        per_minute: 10,
        per_hour: 1000,
    };
    let key = Arc::new(format!("{}|app|restrict", new_guid()));
    let now = at(60 * 30 + 1);
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(
                async move { store.rate_limit(&key, &policy, now).await.unwrap().admitted },
            )
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 10);
}

pub async fn audit_log(store: &dyn Store) {
    let start = store
        .audit_events(0, 100_000)
        .await
        .unwrap()
        .last()
        .map_or(0, |(s, _)| *s);
    let event = |n: i64| AuditEvent {
        at: at(n),
        tenant_id: (n % 2 == 0).then(new_guid),
        event: "Test".into(),
        subject: format!("s{n}"),
        actor: "contract".into(),
        detail: (n % 3 == 0).then(|| format!("detail {n}")),
    };
    let written: Vec<_> = (0..5).map(event).collect();
    for e in &written {
        store.append_audit_event(e).await.unwrap();
    }
    let read = store.audit_events(start, 3).await.unwrap();
    assert_eq!(read.len(), 3);
    assert!(read.windows(2).all(|w| w[0].0 < w[1].0), "in order");
    let rest = store.audit_events(read[2].0, 100).await.unwrap();
    let all: Vec<AuditEvent> = read.into_iter().chain(rest).map(|(_, e)| e).collect();
    assert_eq!(all, written);
}

pub async fn machine_lookups(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "srv-01.corp.example").await;

    let by_id = store
        .machine(&t.id, &MachineRef::Id(m.id.clone()))
        .await
        .unwrap();
    assert_eq!(by_id.as_ref(), Some(&m), "every field round-trips");
    let by_aad = store
        .machine(&t.id, &MachineRef::AadDeviceId(m.aad_device_id.clone()))
        .await
        .unwrap();
    assert_eq!(by_aad.as_ref(), Some(&m));
    let by_name = store
        .machine(&t.id, &MachineRef::DnsName("SRV-01.Corp.Example".into()))
        .await
        .unwrap();
    assert_eq!(
        by_name.as_ref(),
        Some(&m),
        "DNS names compare case-insensitively"
    );
    assert_eq!(
        store
            .machine(&t.id, &MachineRef::Id(new_machine_id()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .machine_by_credential(&m.credential_sha256)
            .await
            .unwrap()
            .as_ref(),
        Some(&m)
    );
    assert_eq!(
        store
            .machine_by_credential(&new_machine_id())
            .await
            .unwrap(),
        None
    );

    // The DNS name is unique within a tenant only.
    let dup = machine_record(&t.id, "srv-01.corp.example");
    match store.insert_machine(&dup).await {
        Err(Error::BadRequest(msg)) => {
            assert_eq!(msg, "A machine named srv-01.corp.example already exists")
        }
        other => panic!("duplicate DNS name: {other:?}"),
    }
    assert_eq!(
        store
            .machine(&t.id, &MachineRef::Id(dup.id.clone()))
            .await
            .unwrap(),
        None
    );
    let elsewhere = new_tenant(store).await;
    new_machine(store, &elsewhere, "srv-01.corp.example").await;
}

pub async fn tenant_isolation(store: &dyn Store) {
    let a = new_tenant(store).await;
    let b = new_tenant(store).await;
    let m = new_machine(store, &a, "isolated.corp.example").await;
    let action = new_action(store, &m, RestrictCodeExecution, at(1)).await;

    for by in [
        MachineRef::Id(m.id.clone()),
        MachineRef::AadDeviceId(m.aad_device_id.clone()),
        MachineRef::DnsName(m.computer_dns_name.clone()),
    ] {
        assert_eq!(store.machine(&b.id, &by).await.unwrap(), None, "{by:?}");
        assert!(store.machine(&a.id, &by).await.unwrap().is_some(), "{by:?}");
    }
    let machines_b = store
        .list_machines(
            &b.id,
            &DeviceScope::All,
            &Query {
                count: true,
                ..Query::default()
            },
        )
        .await
        .unwrap();
    assert!(machines_b.items.is_empty());
    assert_eq!(machines_b.total, Some(0));
    let machines_a = store
        .list_machines(&a.id, &DeviceScope::All, &Query::default())
        .await
        .unwrap();
    assert_eq!(machines_a.items, vec![m.clone()]);

    assert_eq!(store.action(&b.id, &action.id).await.unwrap(), None);
    assert_eq!(
        store.action(&a.id, &action.id).await.unwrap(),
        Some(action.clone())
    );
    let actions_b = store
        .list_actions(
            &b.id,
            &DeviceScope::All,
            &Query {
                count: true,
                ..Query::default()
            },
        )
        .await
        .unwrap();
    assert!(actions_b.items.is_empty());
    assert_eq!(actions_b.total, Some(0));
    // Even a filter naming A's machine finds nothing for B.
    let q = Query {
        filter: Some(cmp(ActionField::MachineId, CmpOp::Eq, text(&m.id))),
        ..Query::default()
    };
    assert!(store
        .list_actions(&b.id, &DeviceScope::All, &q)
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        ids(&store
            .list_actions(&a.id, &DeviceScope::All, &q)
            .await
            .unwrap()
            .items),
        vec![action.id]
    );
}

/// Seen since a time and restricted, counted over every tenant.
pub async fn fleet_summary(store: &dyn Store) {
    let before = store.fleet_summary(at(500)).await.unwrap();
    let t = new_tenant(store).await;
    let fresh = new_machine(store, &t, "fresh.corp.example").await;
    let stale = new_machine(store, &t, "stale.corp.example").await;
    let restricted = EnforcementState {
        restricted: true,
        ..EnforcementState::default()
    };
    let info = DeviceInfo::default();
    store
        .record_heartbeat(&fresh.id, &info, &restricted, at(600))
        .await
        .unwrap();
    store
        .record_heartbeat(&stale.id, &info, &EnforcementState::default(), at(400))
        .await
        .unwrap();
    let after = store.fleet_summary(at(500)).await.unwrap();
    assert_eq!(after.seen, before.seen + 1, "{before:?} -> {after:?}");
    assert_eq!(
        after.restricted,
        before.restricted + 1,
        "{before:?} -> {after:?}"
    );
    store
        .record_heartbeat(&fresh.id, &info, &EnforcementState::default(), at(700))
        .await
        .unwrap();
    assert_eq!(
        store.fleet_summary(at(500)).await.unwrap().restricted,
        before.restricted
    );
}

pub async fn heartbeat(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "beating.corp.example").await;
    let info = DeviceInfo {
        os_platform: "Linux".into(),
        os_version: "24.04".into(),
        kernel_version: "6.11.0".into(),
        os_architecture: "aarch64".into(),
        agent_version: "0.2.0".into(),
        ip_addresses: vec!["192.168.1.20".into(), "192.168.1.21".into()],
        capabilities: Capabilities {
            can_restrict_execution: true,
            exec_permission_events: true,
            filesystem_marks: true,
            simulated: true,
        },
        machine_tags: vec![],
    };
    let enforcement = EnforcementState {
        restricted: true,
        since: Some(at(50)),
        applied_action_id: Some(new_guid()),
        mode: appfence_proto::agent::EnforcementMode::Monitor,
        coverage: vec!["/".into(), "/home".into()],
        allowlist_version: 3,
        unprotected_seconds: 42,
        last_unprotected: Some(appfence_proto::agent::UnprotectedPeriod {
            from: at(10),
            to: at(52),
        }),
        state_fault: Some(appfence_proto::agent::StateFault {
            path: "/var/lib/appfence/enforcement.json".into(),
            error: "No space left on device (os error 28)".into(),
            since: at(55),
        }),
        protected: vec![appfence_proto::agent::ProtectedFile {
            sha256: hash(7),
            path: "/usr/sbin/appfence".into(),
            role: appfence_proto::agent::ProtectedRole::Agent,
        }],
    };
    store
        .record_heartbeat(&m.id, &info, &enforcement, at(60))
        .await
        .unwrap();
    let got = store
        .machine(&t.id, &MachineRef::Id(m.id.clone()))
        .await
        .unwrap()
        .unwrap();
    let expected = MachineRecord {
        last_seen: Some(at(60)),
        os_platform: info.os_platform.clone(),
        os_version: info.os_version.clone(),
        kernel_version: info.kernel_version.clone(),
        os_architecture: info.os_architecture.clone(),
        agent_version: info.agent_version.clone(),
        last_ip_address: Some("192.168.1.20".into()),
        ip_addresses: info.ip_addresses.clone(),
        health_status: "Active".into(),
        capabilities: info.capabilities.clone(),
        enforcement: enforcement.clone(),
        ..m.clone()
    };
    assert_eq!(got, expected);

    let no_ips = DeviceInfo {
        ip_addresses: vec![],
        ..info
    };
    store
        .record_heartbeat(&m.id, &no_ips, &enforcement, at(70))
        .await
        .unwrap();
    let got = store
        .machine(&t.id, &MachineRef::Id(m.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.last_ip_address, got.last_seen), (None, Some(at(70))));

    let unknown = store
        .record_heartbeat(&new_machine_id(), &no_ips, &enforcement, at(80))
        .await;
    assert!(
        matches!(unknown, Err(Error::ResourceNotFound(_))),
        "{unknown:?}"
    );
}

/// Re-enrolment with the enrolment key: a new credential for the same machine, only
/// with the key the machine was enrolled with.
pub async fn reenrollment(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "reenrol.corp.example").await;
    let key = m.enrollment_key_sha256.clone().unwrap();
    let action = new_action(store, &m, RestrictCodeExecution, at(1)).await;
    let info = DeviceInfo {
        os_platform: "Linux".into(),
        os_version: "24.04".into(),
        kernel_version: "6.11.0".into(),
        os_architecture: "aarch64".into(),
        agent_version: "0.2.0".into(),
        ip_addresses: vec!["192.168.1.30".into()],
        capabilities: Capabilities::default(),
        machine_tags: vec!["ignored".into()],
    };
    let tenant_id = t.id.as_str();
    let stored =
        |id: String| async move { store.machine(tenant_id, &MachineRef::Id(id)).await.unwrap() };

    // Another key, an unknown name or another tenant: nothing happens.
    let elsewhere = new_tenant(store).await;
    for (tenant, name, key) in [
        (&t.id, "reenrol.corp.example", random_sha256()),
        (&t.id, "unknown.corp.example", key.clone()),
        (&elsewhere.id, "reenrol.corp.example", key.clone()),
    ] {
        let refused = store
            .reenroll_machine(tenant, name, &key, &random_sha256(), &info, at(80))
            .await
            .unwrap();
        assert_eq!(refused, None, "{tenant} {name}");
    }
    assert_eq!(stored(m.id.clone()).await.as_ref(), Some(&m));

    // The same key (the name in any case): a new credential, the device's facts.
    let credential = random_sha256();
    let got = store
        .reenroll_machine(
            &t.id,
            "REENROL.Corp.Example",
            &key,
            &credential,
            &info,
            at(90),
        )
        .await
        .unwrap();
    let expected = MachineRecord {
        credential_sha256: credential.clone(),
        last_seen: Some(at(90)),
        os_version: "24.04".into(),
        kernel_version: "6.11.0".into(),
        os_architecture: "aarch64".into(),
        agent_version: "0.2.0".into(),
        last_ip_address: Some("192.168.1.30".into()),
        ip_addresses: vec!["192.168.1.30".into()],
        capabilities: Capabilities::default(),
        ..m.clone()
    };
    assert_eq!(got.as_ref(), Some(&expected), "tags and ids stay");
    assert_eq!(stored(m.id.clone()).await.as_ref(), Some(&expected));
    assert_eq!(
        store
            .machine_by_credential(&m.credential_sha256)
            .await
            .unwrap(),
        None,
        "the old credential no longer names the machine"
    );
    assert_eq!(
        store.machine_by_credential(&credential).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        ids(&store.open_actions(&m.id).await.unwrap()),
        vec![action.id],
        "its actions stay with it"
    );

    // A machine enrolled without a key cannot be taken over by any key.
    let keyless = MachineRecord {
        enrollment_key_sha256: None,
        ..machine_record(&t.id, "keyless.corp.example")
    };
    store.insert_machine(&keyless).await.unwrap();
    let refused = store
        .reenroll_machine(
            &t.id,
            "keyless.corp.example",
            &random_sha256(),
            &random_sha256(),
            &info,
            at(95),
        )
        .await
        .unwrap();
    assert_eq!(refused, None);
    assert_eq!(stored(keyless.id.clone()).await, Some(keyless));
}

/// Spec §7: one open restrict-family action per device; final ones free the slot.
pub async fn duplicate_rule(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "dup.corp.example").await;
    let other = new_machine(store, &t, "dup-other.corp.example").await;

    let first = new_action(store, &m, RestrictCodeExecution, at(1)).await;
    let again = action_record(&m, RestrictCodeExecution, at(2));
    assert!(is_duplicate(&store.create_action(&again).await));
    assert_eq!(
        store.action(&t.id, &again.id).await.unwrap(),
        None,
        "refused leaves no row"
    );
    assert!(store.audit_trail(&again.id).await.unwrap().is_empty());
    // Unrestrict shares the slot.
    let un = action_record(&m, UnrestrictCodeExecution, at(3));
    assert!(is_duplicate(&store.create_action(&un).await));
    // Another device is independent.
    new_action(store, &other, RestrictCodeExecution, at(3)).await;

    must_apply(store, &first.id, change(InProgress, at(4), "agent")).await;
    let un = action_record(&m, UnrestrictCodeExecution, at(5));
    assert!(
        is_duplicate(&store.create_action(&un).await),
        "InProgress is open too"
    );

    // Each final status frees the slot.
    let mut open = first;
    for (i, end) in [Succeeded, Failed, Cancelled, TimeOut]
        .into_iter()
        .enumerate()
    {
        let i = i as i64;
        must_apply(store, &open.id, change(end, at(10 + 10 * i), "agent")).await;
        let kind = if i % 2 == 0 {
            UnrestrictCodeExecution
        } else {
            RestrictCodeExecution
        };
        open = new_action(store, &m, kind, at(11 + 10 * i)).await;
        let blocked = action_record(&m, RestrictCodeExecution, at(12 + 10 * i));
        assert!(is_duplicate(&store.create_action(&blocked).await));
    }
}

/// Only the restrict family is limited; other types may be open side by side.
pub async fn other_types_not_blocked(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "scan.corp.example").await;
    new_action(store, &m, RestrictCodeExecution, at(1)).await;
    for (i, kind) in [
        RunAntiVirusScan,
        RunAntiVirusScan,
        Isolate,
        CollectInvestigationPackage,
    ]
    .into_iter()
    .enumerate()
    {
        new_action(store, &m, kind, at(2 + i as i64)).await;
    }
    assert_eq!(store.open_actions(&m.id).await.unwrap().len(), 5);
}

/// 200 simultaneous creates for one idle device: exactly one wins.
/// How many actions the tenant has (`$count=true`).
async fn action_count(store: &dyn Store, tenant_id: &str) -> u64 {
    let query = Query {
        count: true,
        ..Query::default()
    };
    let page = store
        .list_actions(tenant_id, &DeviceScope::All, &query)
        .await
        .unwrap();
    page.total.expect("a count was asked for")
}

pub async fn duplicate_rule_under_concurrency(store: Arc<dyn Store>) {
    const CALLERS: usize = 200;
    let t = new_tenant(store.as_ref()).await;
    let m = new_machine(store.as_ref(), &t, "race.corp.example").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            let kind = if i % 2 == 0 {
                RestrictCodeExecution
            } else {
                UnrestrictCodeExecution
            };
            let a = action_record(&m, kind, at(i as i64));
            tokio::spawn(async move {
                barrier.wait().await;
                store.create_action(&a).await.map(|()| a.id)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut duplicates = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(id) => winners.push(id),
            Err(Error::ActiveRequestAlreadyExists) => duplicates += 1,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!((winners.len(), duplicates), (1, CALLERS - 1));
    assert_eq!(ids(&store.open_actions(&m.id).await.unwrap()), winners);
    assert_eq!(action_count(store.as_ref(), &t.id).await, 1);
    assert_eq!(store.audit_trail(&winners[0]).await.unwrap().len(), 1);
}

/// Many devices at once, several callers each (the load group commit batches): on every
/// device exactly one creation wins, each winner is listed with its creation audited,
/// and no refused creation left a row behind.
pub async fn concurrent_creations_on_many_devices(store: Arc<dyn Store>) {
    const DEVICES: usize = 40;
    const PER_DEVICE: usize = 5;
    let t = new_tenant(store.as_ref()).await;
    let mut machines = Vec::new();
    for d in 0..DEVICES {
        machines.push(new_machine(store.as_ref(), &t, &format!("many-{d}.corp.example")).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(DEVICES * PER_DEVICE));
    let tasks: Vec<_> = (0..DEVICES * PER_DEVICE)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            let m = machines[i % DEVICES].clone();
            let a = action_record(&m, RestrictCodeExecution, at(i as i64));
            tokio::spawn(async move {
                barrier.wait().await;
                (m.id.clone(), store.create_action(&a).await.map(|()| a.id))
            })
        })
        .collect();
    let mut winners: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut duplicates = 0;
    for task in tasks {
        match task.await.expect("task") {
            (machine, Ok(id)) => winners.entry(machine).or_default().push(id),
            (_, Err(Error::ActiveRequestAlreadyExists)) => duplicates += 1,
            (_, Err(e)) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(winners.len(), DEVICES, "every device has its winner");
    assert!(winners.values().all(|w| w.len() == 1), "{winners:?}");
    assert_eq!(duplicates, DEVICES * (PER_DEVICE - 1));
    for (machine, ids_won) in &winners {
        assert_eq!(&ids(&store.open_actions(machine).await.unwrap()), ids_won);
        assert_eq!(store.audit_trail(&ids_won[0]).await.unwrap().len(), 1);
    }
    assert_eq!(action_count(store.as_ref(), &t.id).await, DEVICES as u64);
}

/// A fleet heartbeating at once (the load the stores batch): every device's row and
/// address history take its own heartbeat (one of a device's two, whole), and a
/// heartbeat for a device that does not exist is refused alone.
pub async fn concurrent_heartbeats(store: Arc<dyn Store>) {
    const DEVICES: usize = 60;
    let t = new_tenant(store.as_ref()).await;
    let mut machines = Vec::new();
    for d in 0..DEVICES {
        machines.push(new_machine(store.as_ref(), &t, &format!("beat-{d}.corp.example")).await);
    }
    let info = |d: usize, version: &str| DeviceInfo {
        os_platform: "Linux".into(),
        os_version: "24.04".into(),
        agent_version: version.into(),
        ip_addresses: vec![format!("10.1.{}.{}", d / 200, d % 200 + 1)],
        ..DeviceInfo::default()
    };
    let mut calls: Vec<(Option<usize>, String, DeviceInfo, Timestamp)> = Vec::new();
    for (d, m) in machines.iter().enumerate() {
        calls.push((Some(d), m.id.clone(), info(d, "1.0.0"), at(100)));
        // Every third device heartbeats twice; the later one must be what is kept.
        if d % 3 == 0 {
            calls.push((Some(d), m.id.clone(), info(d, "1.0.1"), at(101)));
        }
    }
    calls.push((None, "0".repeat(40), info(999, "1.0.0"), at(100)));
    let barrier = Arc::new(tokio::sync::Barrier::new(calls.len()));
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(device, id, info, when)| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let enforcement = EnforcementState::default();
                (
                    device,
                    store.record_heartbeat(&id, &info, &enforcement, when).await,
                )
            })
        })
        .collect();
    for task in tasks {
        match task.await.expect("task") {
            (Some(_), outcome) => outcome.expect("a device's heartbeat"),
            (None, outcome) => assert!(
                matches!(
                    outcome,
                    Err(Error::ResourceNotFound(_) | Error::NotFound(_))
                ),
                "{outcome:?}"
            ),
        }
    }
    for (d, m) in machines.iter().enumerate() {
        let got = store
            .machine(&t.id, &MachineRef::Id(m.id.clone()))
            .await
            .unwrap()
            .unwrap();
        // Two heartbeats of one device at once: either may land last, but the row holds
        // one of them whole, never fields of both.
        let version = got.agent_version.clone();
        let seen = match version.as_str() {
            "1.0.1" if d % 3 == 0 => at(101),
            "1.0.0" => at(100),
            other => panic!("device {d}: agent version {other}"),
        };
        assert_eq!(got.last_seen, Some(seen), "device {d}");
        let ip = &info(d, &version).ip_addresses[0];
        let by_ip = store
            .machines_seen_with_ip(&t.id, ip, at(99), at(102))
            .await
            .unwrap();
        assert_eq!(ids_of(&by_ip), vec![m.id.clone()], "device {d} by {ip}");
    }
}

fn ids_of(machines: &[MachineRecord]) -> Vec<String> {
    machines.iter().map(|m| m.id.clone()).collect()
}

pub async fn transition_rules(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "life.corp.example").await;

    let missing = store
        .transition(&new_guid(), &change(Cancelled, at(1), "x"))
        .await;
    assert!(
        matches!(missing, Err(Error::ResourceNotFound(_))),
        "{missing:?}"
    );

    let a = new_action(store, &m, RestrictCodeExecution, at(1)).await;
    let started = must_apply(store, &a.id, change(InProgress, at(2), "agent:m")).await;
    assert_eq!(
        started,
        ActionRecord {
            status: InProgress,
            last_update: at(2),
            ..a.clone()
        }
    );

    // Not allowed from InProgress: refused, with the action as it is.
    for to in [Pending, InProgress] {
        let r = store
            .transition(&a.id, &change(to, at(3), "agent:m"))
            .await
            .unwrap();
        assert_eq!(r, TransitionOutcome::Refused(started.clone()), "{to:?}");
    }

    let failed = StatusChange {
        error_h_result: Some(-2147024891),
        troubleshoot_info: Some("fanotify unavailable".into()),
        reason: Some("device reported failure".into()),
        ..change(Failed, at(4), "agent:m")
    };
    let done = must_apply(store, &a.id, failed).await;
    assert_eq!(
        done,
        ActionRecord {
            status: Failed,
            last_update: at(4),
            error_h_result: -2147024891,
            troubleshoot_info: Some("fanotify unavailable".into()),
            ..a.clone()
        }
    );
    // A final status never changes.
    for to in ActionStatus::ALL {
        let r = store
            .transition(&a.id, &change(to, at(5), "someone"))
            .await
            .unwrap();
        assert_eq!(
            r,
            TransitionOutcome::Refused(done.clone()),
            "Failed -> {to:?}"
        );
    }
    assert_eq!(store.action(&t.id, &a.id).await.unwrap(), Some(done));

    // Cancelling records who, why and when.
    let b = new_action(store, &m, UnrestrictCodeExecution, at(10)).await;
    let cancel = StatusChange {
        cancellation_comment: Some("wrong device".into()),
        ..change(Cancelled, at(11), "bob@contoso.com")
    };
    let cancelled = must_apply(store, &b.id, cancel).await;
    assert_eq!(
        cancelled,
        ActionRecord {
            status: Cancelled,
            last_update: at(11),
            cancellation_requestor: Some("bob@contoso.com".into()),
            cancellation_comment: Some("wrong device".into()),
            cancellation_time: Some(at(11)),
            ..b.clone()
        }
    );

    // Pending may go straight to a final status.
    let c = new_action(store, &m, RestrictCodeExecution, at(20)).await;
    let ok = must_apply(store, &c.id, change(Succeeded, at(21), "agent:m")).await;
    assert_eq!(
        ok,
        ActionRecord {
            status: Succeeded,
            last_update: at(21),
            ..c
        }
    );
}

/// A cancel racing the device's result: exactly one wins, the other sees its outcome.
pub async fn concurrent_cancel_and_complete(store: Arc<dyn Store>) {
    let t = new_tenant(store.as_ref()).await;
    let m = new_machine(store.as_ref(), &t, "cancel-race.corp.example").await;
    for round in 0..25 {
        let base = round * 100;
        let a = new_action(store.as_ref(), &m, RestrictCodeExecution, at(base)).await;
        must_apply(
            store.as_ref(),
            &a.id,
            change(InProgress, at(base + 1), "agent"),
        )
        .await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let race = |c: StatusChange| {
            let (store, barrier, id) = (store.clone(), barrier.clone(), a.id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.transition(&id, &c).await.expect("transition")
            })
        };
        let cancel = race(StatusChange {
            cancellation_comment: Some("stop".into()),
            ..change(Cancelled, at(base + 2), "bob")
        });
        let succeed = race(change(Succeeded, at(base + 2), "agent"));
        let outcomes = [cancel.await.unwrap(), succeed.await.unwrap()];
        let applied: Vec<&ActionRecord> = outcomes
            .iter()
            .filter_map(|o| match o {
                TransitionOutcome::Applied(a) => Some(a),
                TransitionOutcome::Refused(_) => None,
            })
            .collect();
        assert_eq!(applied.len(), 1, "round {round}: {outcomes:?}");
        let winner = applied[0].clone();
        for o in &outcomes {
            if let TransitionOutcome::Refused(current) = o {
                assert_eq!(current, &winner, "the loser sees the winner's result");
            }
        }
        assert_eq!(
            store.action(&t.id, &a.id).await.unwrap(),
            Some(winner.clone())
        );
        let trail = store.audit_trail(&a.id).await.unwrap();
        assert_eq!(trail.len(), 3);
        assert_eq!(trail[2].to, winner.status);
    }
}

pub async fn audit_trail(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "audit.corp.example").await;
    let a = new_action(store, &m, RestrictCodeExecution, at(1)).await;
    let agent = format!("agent:{}", m.id);
    must_apply(store, &a.id, change(InProgress, at(2), &agent)).await;
    // A refused change leaves no trace.
    let refused = store
        .transition(&a.id, &change(Pending, at(3), &agent))
        .await
        .unwrap();
    assert!(matches!(refused, TransitionOutcome::Refused(_)));
    let done = StatusChange {
        reason: Some("applied".into()),
        ..change(Succeeded, at(4), &agent)
    };
    must_apply(store, &a.id, done).await;
    let late = store
        .transition(&a.id, &change(Cancelled, at(5), "bob"))
        .await
        .unwrap();
    assert!(matches!(late, TransitionOutcome::Refused(_)));

    let row = |at, actor: &str, from, to, reason: Option<&str>| AuditRecord {
        action_id: a.id.clone(),
        at,
        actor: actor.to_string(),
        from,
        to,
        reason: reason.map(str::to_string),
    };
    assert_eq!(
        store.audit_trail(&a.id).await.unwrap(),
        vec![
            row(at(1), "alice@contoso.com", None, Pending, None),
            row(at(2), &agent, Some(Pending), InProgress, None),
            row(at(4), &agent, Some(InProgress), Succeeded, Some("applied")),
        ]
    );
    assert!(store.audit_trail(&new_guid()).await.unwrap().is_empty());
}

pub async fn time_out_actions(store: &dyn Store) {
    let t = new_tenant(store).await;
    let mut n = 0;
    let mut machine = || {
        n += 1;
        machine_record(&t.id, &format!("sweep-{n}.corp.example"))
    };
    let ms: Vec<MachineRecord> = (0..6).map(|_| machine()).collect();
    for m in &ms {
        store.insert_machine(m).await.unwrap();
    }
    let (pending_before, in_progress_before, now) = (at(5000), at(9000), at(10_000));

    let stale_pending = new_action(store, &ms[0], RestrictCodeExecution, at(4000)).await;
    let fresh_pending = new_action(store, &ms[1], RestrictCodeExecution, at(6000)).await;
    let edge_pending = new_action(store, &ms[2], RestrictCodeExecution, pending_before).await;
    let stale_running = new_action(store, &ms[3], RestrictCodeExecution, at(1000)).await;
    must_apply(
        store,
        &stale_running.id,
        change(InProgress, at(8000), "agent"),
    )
    .await;
    // Created long ago but started recently: the pending timeout no longer applies.
    let fresh_running = new_action(store, &ms[4], RestrictCodeExecution, at(1000)).await;
    let fresh_running = must_apply(
        store,
        &fresh_running.id,
        change(InProgress, at(9500), "agent"),
    )
    .await;
    let finished = new_action(store, &ms[5], RestrictCodeExecution, at(1000)).await;
    let finished = must_apply(store, &finished.id, change(Succeeded, at(2000), "agent")).await;

    let ours = |v: Vec<ActionRecord>| -> Vec<ActionRecord> {
        v.into_iter().filter(|a| a.tenant_id == t.id).collect()
    };
    let changed = ours(
        store
            .time_out_actions(pending_before, in_progress_before, now)
            .await
            .unwrap(),
    );
    let expected = [&stale_pending.id, &stale_running.id];
    assert_eq!(
        changed.iter().map(|a| &a.id).collect::<BTreeSet<_>>(),
        expected.into_iter().collect::<BTreeSet<_>>()
    );
    for a in &changed {
        assert_eq!((a.status, a.last_update), (TimeOut, now));
        assert_eq!(store.action(&t.id, &a.id).await.unwrap().as_ref(), Some(a));
    }
    let reason = |id: String| async move {
        let trail = store.audit_trail(&id).await.unwrap();
        let last = trail.last().unwrap().clone();
        assert_eq!(
            (last.actor.as_str(), last.to, last.at),
            ("sweeper", TimeOut, now)
        );
        last
    };
    let p = reason(stale_pending.id.clone()).await;
    let r = reason(stale_running.id.clone()).await;
    assert_eq!((p.from, r.from), (Some(Pending), Some(InProgress)));
    assert!(p.reason.is_some() && r.reason.is_some());
    assert_ne!(p.reason, r.reason, "the reason names which timeout");

    for untouched in [&fresh_pending, &edge_pending, &fresh_running, &finished] {
        assert_eq!(
            store.action(&t.id, &untouched.id).await.unwrap().as_ref(),
            Some(untouched)
        );
    }
    // Nothing left to do; and the timed-out device may be asked again.
    assert!(ours(
        store
            .time_out_actions(pending_before, in_progress_before, now)
            .await
            .unwrap()
    )
    .is_empty());
    new_action(store, &ms[0], UnrestrictCodeExecution, at(10_001)).await;
}

/// Offboarding: one open offboard per device (beside the restrict-family slot); an
/// offboard that ends `Succeeded`, `Failed` or `TimeOut` offboards its machine in the
/// same transaction (status, health, enrolment key forgotten, audit event), one that is
/// cancelled does not; an offboarded machine stays so, whatever heartbeat or enrolment
/// key arrives afterwards.
pub async fn offboarding(store: &dyn Store) {
    use appfence_core::audit::DEVICE_OFFBOARDED;
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "leaver.corp.example").await;
    let key = m.enrollment_key_sha256.clone().unwrap();
    let audit_start = store
        .audit_events(0, 100_000)
        .await
        .unwrap()
        .last()
        .map_or(0, |(s, _)| *s);

    // The duplicate rule, with a slot of its own.
    let restrict = new_action(store, &m, RestrictCodeExecution, at(1)).await;
    let offboard = new_action(store, &m, Offboard, at(2)).await;
    assert!(
        is_duplicate(
            &store
                .create_action(&action_record(&m, Offboard, at(3)))
                .await
        ),
        "a second open offboard is refused"
    );
    assert_eq!(
        ids(&store.open_actions(&m.id).await.unwrap()),
        vec![restrict.id.clone(), offboard.id.clone()]
    );

    // Open, and acknowledged: nothing happens to the machine yet.
    must_apply(store, &offboard.id, change(InProgress, at(4), "agent")).await;
    let still = store
        .machine(&t.id, &MachineRef::Id(m.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still, m, "an open offboard changes nothing");

    // Succeeded: offboarded, in the same transaction.
    must_apply(store, &restrict.id, change(Succeeded, at(5), "agent")).await;
    let done = must_apply(store, &offboard.id, change(Succeeded, at(6), "agent")).await;
    assert_eq!(done.status, Succeeded);
    let gone = store
        .machine(&t.id, &MachineRef::Id(m.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.offboarded, Some(at(6)));
    assert_eq!(
        (gone.onboarding_status.as_str(), gone.health_status.as_str()),
        ("Offboarded", "Inactive")
    );
    assert_eq!(
        gone.enrollment_key_sha256, None,
        "its enrolment key is forgotten"
    );
    assert_eq!(
        gone,
        MachineRecord {
            offboarded: Some(at(6)),
            onboarding_status: "Offboarded".into(),
            health_status: "Inactive".into(),
            enrollment_key_sha256: None,
            ..m.clone()
        },
        "nothing else changes"
    );
    // The credential still names it, so that the gateway can tell a revoked device
    // from an unknown one; the record says it is offboarded.
    assert_eq!(
        store
            .machine_by_credential(&m.credential_sha256)
            .await
            .unwrap()
            .and_then(|found| found.offboarded),
        Some(at(6))
    );
    let events: Vec<_> = store
        .audit_events(audit_start, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.event == DEVICE_OFFBOARDED && e.tenant_id.as_deref() == Some(&t.id))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (
            events[0].subject.as_str(),
            events[0].actor.as_str(),
            events[0].at
        ),
        (m.id.as_str(), "alice@contoso.com", at(6))
    );
    assert!(events[0].detail.as_deref().unwrap().contains(&offboard.id));

    // It stays offboarded: a late heartbeat does not make it active again, and its
    // enrolment key no longer enrols it.
    store
        .record_heartbeat(
            &m.id,
            &DeviceInfo {
                os_platform: "Linux".into(),
                agent_version: "0.1.0".into(),
                ..DeviceInfo::default()
            },
            &EnforcementState::default(),
            at(7),
        )
        .await
        .unwrap();
    let after = store
        .machine(&t.id, &MachineRef::Id(m.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.health_status.as_str(), after.offboarded),
        ("Inactive", Some(at(6)))
    );
    assert_eq!(
        store
            .reenroll_machine(
                &t.id,
                &m.computer_dns_name,
                &key,
                &random_sha256(),
                &DeviceInfo::default(),
                at(8),
            )
            .await
            .unwrap(),
        None
    );
    // A new offboard action may still be stored (the server refuses it first): it
    // leaves the machine offboarded when it was, and records no second event.
    let again = new_action(store, &m, Offboard, at(9)).await;
    must_apply(store, &again.id, change(Failed, at(10), "agent")).await;
    assert_eq!(
        store
            .machine(&t.id, &MachineRef::Id(m.id.clone()))
            .await
            .unwrap()
            .unwrap()
            .offboarded,
        Some(at(6))
    );

    // Cancelled: nothing happens, and the device may be offboarded later.
    let kept = new_machine(store, &t, "stays.corp.example").await;
    let cancelled = new_action(store, &kept, Offboard, at(1)).await;
    must_apply(store, &cancelled.id, change(Cancelled, at(2), "bob")).await;
    let found = store
        .machine(&t.id, &MachineRef::Id(kept.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, kept);
    // Failed: offboarded too (a device cannot decline its offboarding).
    let failed = new_action(store, &kept, Offboard, at(3)).await;
    must_apply(store, &failed.id, change(Failed, at(4), "agent")).await;
    let found = store
        .machine(&t.id, &MachineRef::Id(kept.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.offboarded, found.onboarding_status.as_str()),
        (Some(at(4)), "Offboarded")
    );

    // TimeOut: the device never came for it; its credential must not outlive that.
    let lost = new_machine(store, &t, "lost.corp.example").await;
    let stale = new_action(store, &lost, Offboard, at(100)).await;
    let other = new_machine(store, &t, "other.corp.example").await;
    let stale_restrict = new_action(store, &other, RestrictCodeExecution, at(100)).await;
    let timed_out: Vec<String> = store
        .time_out_actions(at(200), at(200), at(300))
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.tenant_id == t.id)
        .map(|a| a.id)
        .collect();
    assert_eq!(
        timed_out.iter().collect::<BTreeSet<_>>(),
        [&stale.id, &stale_restrict.id].into_iter().collect()
    );
    let found = store
        .machine(&t.id, &MachineRef::Id(lost.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.offboarded, found.health_status.as_str()),
        (Some(at(300)), "Inactive")
    );
    let untouched = store
        .machine(&t.id, &MachineRef::Id(other.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched, other, "a timed-out restrict offboards nothing");

    // Offboarded machines can be found by their status.
    let p = store
        .list_machines(
            &t.id,
            &DeviceScope::All,
            &Query {
                filter: Some(cmp(
                    MachineField::OnboardingStatus,
                    CmpOp::Eq,
                    text("Offboarded"),
                )),
                ..Query::default()
            },
        )
        .await
        .unwrap();
    let mut names: Vec<String> = p.items.into_iter().map(|m| m.computer_dns_name).collect();
    names.sort();
    assert_eq!(
        names,
        ["leaver", "lost", "stays"].map(|n| format!("{n}.corp.example"))
    );
}

pub async fn list_actions(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m1 = new_machine(store, &t, "alpha.corp.example").await;
    let m2 = new_machine(store, &t, "beta.corp.example").await;
    // Someone else's actions must never show up.
    let stranger = new_tenant(store).await;
    let sm = new_machine(store, &stranger, "alpha.corp.example").await;
    new_action(store, &sm, RunAntiVirusScan, at(5)).await;

    // Insertion order; `created` is not monotonic and has one tie (at(11)).
    let mut all = Vec::new();
    for i in 0..10 {
        let m = if i % 2 == 0 { &m1 } else { &m2 };
        let kind = if i % 3 == 0 {
            Isolate
        } else {
            RunAntiVirusScan
        };
        let mut a = action_record(m, kind, at(i));
        if i % 2 == 1 {
            a.requestor = "Bob@Contoso.com".into();
        }
        store.create_action(&a).await.unwrap();
        all.push(a);
    }
    let r = new_action(store, &m2, RestrictCodeExecution, at(11)).await;
    let r = must_apply(store, &r.id, change(Succeeded, at(12), "agent")).await;
    all.push(r.clone());
    let tie = new_action(store, &m1, RestrictCodeExecution, at(11)).await;
    all.push(tie.clone());
    let early = new_action(store, &m2, RunAntiVirusScan, at(-5)).await;
    all.push(early.clone());

    // Newest first; the later insert first among equal creation times.
    let mut newest_first: Vec<(usize, &ActionRecord)> = all.iter().enumerate().collect();
    newest_first.sort_by_key(|(i, a)| (std::cmp::Reverse(a.created), std::cmp::Reverse(*i)));
    let newest_first: Vec<String> = newest_first
        .into_iter()
        .map(|(_, a)| a.id.clone())
        .collect();
    assert_eq!(newest_first[0], tie.id);
    assert_eq!(newest_first[1], r.id);

    let page = store
        .list_actions(&t.id, &DeviceScope::All, &Query::default())
        .await
        .unwrap();
    assert_eq!(ids(&page.items), newest_first);
    assert_eq!((page.total, page.more), (None, false));
    assert_eq!(
        page.items.iter().find(|a| a.id == r.id),
        Some(&r),
        "records round-trip"
    );

    // Paging: $top/$skip walk the same order; `more` until the last page.
    let n = all.len() as u32;
    let mut walked = Vec::new();
    for skip in (0..n).step_by(5) {
        let q = Query {
            top: Some(5),
            skip,
            count: true,
            ..Query::default()
        };
        let page = store
            .list_actions(&t.id, &DeviceScope::All, &q)
            .await
            .unwrap();
        assert_eq!(page.total, Some(n as u64), "count ignores $top/$skip");
        assert_eq!(page.more, skip + 5 < n, "skip {skip}");
        walked.extend(ids(&page.items));
    }
    assert_eq!(walked, newest_first);
    let exact = Query {
        top: Some(n),
        ..Query::default()
    };
    assert!(
        !store
            .list_actions(&t.id, &DeviceScope::All, &exact)
            .await
            .unwrap()
            .more
    );
    let beyond = Query {
        skip: n + 3,
        ..Query::default()
    };
    let page = store
        .list_actions(&t.id, &DeviceScope::All, &beyond)
        .await
        .unwrap();
    assert!(page.items.is_empty() && !page.more);

    let tenant_id = t.id.as_str();
    let filtered = |expr: Expr<ActionField>| {
        let q = Query {
            filter: Some(expr),
            count: true,
            ..Query::default()
        };
        async move {
            store
                .list_actions(tenant_id, &DeviceScope::All, &q)
                .await
                .unwrap()
        }
    };
    let expect = |pred: &dyn Fn(&ActionRecord) -> bool| -> Vec<String> {
        newest_first
            .iter()
            .filter(|id| pred(all.iter().find(|a| &a.id == *id).unwrap()))
            .cloned()
            .collect()
    };

    let p = filtered(cmp(ActionField::Status, CmpOp::Eq, text("Succeeded"))).await;
    assert_eq!(ids(&p.items), vec![r.id.clone()]);
    assert_eq!(p.total, Some(1));

    let p = filtered(cmp(ActionField::MachineId, CmpOp::Eq, text(&m2.id))).await;
    assert_eq!(ids(&p.items), expect(&|a| a.machine_id == m2.id));

    let p = filtered(cmp(
        ActionField::Requestor,
        CmpOp::Eq,
        text("BOB@contoso.COM"),
    ))
    .await;
    assert_eq!(
        ids(&p.items),
        expect(&|a| a.requestor == "Bob@Contoso.com"),
        "case-insensitive"
    );
    assert_eq!(p.total, Some(5));

    let p = filtered(and(
        cmp(
            ActionField::CreationDateTimeUtc,
            CmpOp::Gt,
            Value::Timestamp(at(4)),
        ),
        cmp(ActionField::Type, CmpOp::Eq, text("Isolate")),
    ))
    .await;
    assert_eq!(
        ids(&p.items),
        expect(&|a| a.created > at(4) && a.action_type == Isolate)
    );
    assert_eq!(p.items.len(), 2);

    let p = filtered(Expr::In {
        field: ActionField::Type,
        values: vec![text("RestrictCodeExecution"), text("Isolate")],
    })
    .await;
    assert_eq!(
        ids(&p.items),
        expect(&|a| matches!(a.action_type, RestrictCodeExecution | Isolate))
    );

    let p = filtered(Expr::Not(Box::new(cmp(
        ActionField::Status,
        CmpOp::Eq,
        text("Pending"),
    ))))
    .await;
    assert_eq!(ids(&p.items), vec![r.id.clone()]);

    let q = Query {
        filter: Some(cmp(ActionField::Status, CmpOp::Eq, text("Pending"))),
        top: Some(3),
        skip: 2,
        count: true,
        ..Query::default()
    };
    let p = store
        .list_actions(&t.id, &DeviceScope::All, &q)
        .await
        .unwrap();
    let pending = expect(&|a| a.status == Pending);
    assert_eq!(ids(&p.items), pending[2..5].to_vec());
    assert_eq!((p.total, p.more), (Some(pending.len() as u64), true));

    // An explicit order.
    let q = Query {
        order_by: vec![(ActionField::CreationDateTimeUtc, Direction::Asc)],
        ..Query::default()
    };
    let p = store
        .list_actions(&t.id, &DeviceScope::All, &q)
        .await
        .unwrap();
    assert_eq!(p.items.first().map(|a| &a.id), Some(&early.id));
    assert!(p.items.windows(2).all(|w| w[0].created <= w[1].created));
    assert_eq!(p.items.len(), all.len());
}

pub async fn list_machines(store: &dyn Store) {
    let t = new_tenant(store).await;
    let mk = |name: &str, first_seen: i64, tags: &[&str], rbac: i64, version: &str| {
        let mut m = machine_record(&t.id, name);
        m.first_seen = at(first_seen);
        m.machine_tags = tags.iter().map(|s| s.to_string()).collect();
        m.rbac_group_id = rbac;
        m.os_version = version.to_string();
        m
    };
    let web1 = mk("web-1.corp.example", 10, &["prod", "web"], 5, "22.04");
    let web2 = mk("web-2.corp.example", 30, &["prod"], 0, "24.04");
    let mut db = mk("db-1.corp.example", 20, &[], 5, "24.04");
    db.enforcement.restricted = true;
    // Same first_seen as web2: the name decides.
    let app = mk("app-1.corp.example", 30, &["production"], 0, "22.04");
    for m in [&web1, &web2, &db, &app] {
        store.insert_machine(m).await.unwrap();
    }
    let stranger = new_tenant(store).await;
    let mut s = machine_record(&stranger.id, "web-9.corp.example");
    s.machine_tags = vec!["prod".into()];
    store.insert_machine(&s).await.unwrap();

    let names = |ms: &[MachineRecord]| -> Vec<String> {
        ms.iter().map(|m| m.computer_dns_name.clone()).collect()
    };
    let tenant_id = t.id.as_str();
    let list = |q: Query<MachineField>| async move {
        store
            .list_machines(tenant_id, &DeviceScope::All, &q)
            .await
            .unwrap()
    };

    let p = list(Query {
        count: true,
        ..Query::default()
    })
    .await;
    assert_eq!(
        names(&p.items),
        ["app-1", "web-2", "db-1", "web-1"].map(|n| format!("{n}.corp.example"))
    );
    assert_eq!((p.total, p.more), (Some(4), false));
    assert_eq!(p.items[3], web1, "records round-trip");

    let p = list(Query {
        top: Some(2),
        skip: 1,
        count: true,
        ..Query::default()
    })
    .await;
    assert_eq!(
        names(&p.items),
        [&web2, &db].map(|m| m.computer_dns_name.clone())
    );
    assert_eq!((p.total, p.more), (Some(4), true));

    let filter = |e: Expr<MachineField>| Query {
        filter: Some(e),
        ..Query::default()
    };
    let p = list(filter(Expr::StartsWith {
        field: MachineField::ComputerDnsName,
        prefix: "web-".into(),
    }))
    .await;
    assert_eq!(
        names(&p.items),
        [&web2, &web1].map(|m| m.computer_dns_name.clone())
    );

    let p = list(filter(cmp(
        MachineField::ComputerDnsName,
        CmpOp::Eq,
        text("DB-1.Corp.Example"),
    )))
    .await;
    assert_eq!(p.items, vec![db.clone()], "case-insensitive");

    let p = list(filter(Expr::Contains {
        field: MachineField::MachineTags,
        value: "prod".into(),
    }))
    .await;
    assert_eq!(
        names(&p.items),
        [&web2, &web1].map(|m| m.computer_dns_name.clone()),
        "whole tags only"
    );

    let p = list(filter(cmp(
        MachineField::RbacGroupId,
        CmpOp::Eq,
        Value::Integer(5),
    )))
    .await;
    assert_eq!(
        names(&p.items),
        [&db, &web1].map(|m| m.computer_dns_name.clone())
    );

    let p = list(filter(and(
        cmp(MachineField::Version, CmpOp::Eq, text("24.04")),
        cmp(MachineField::FirstSeen, CmpOp::Lt, Value::Timestamp(at(25))),
    )))
    .await;
    assert_eq!(p.items, vec![db.clone()]);

    let p = list(filter(cmp(MachineField::LastSeen, CmpOp::Eq, Value::Null))).await;
    assert_eq!(p.items.len(), 4, "no heartbeat yet: lastSeen is null");

    // The console's filter on the agent's report (inside the enforcement JSON).
    let p = list(filter(cmp(
        MachineField::Restricted,
        CmpOp::Eq,
        Value::Integer(1),
    )))
    .await;
    assert_eq!(p.items, vec![db.clone()]);
    let p = list(filter(cmp(
        MachineField::Restricted,
        CmpOp::Eq,
        Value::Integer(0),
    )))
    .await;
    assert_eq!(p.items.len(), 3);
    assert!(!p.items.contains(&db));

    let p = list(Query {
        order_by: vec![(MachineField::ComputerDnsName, Direction::Asc)],
        top: Some(3),
        ..Query::default()
    })
    .await;
    assert_eq!(
        names(&p.items),
        [&app, &db, &web1].map(|m| m.computer_dns_name.clone())
    );
    assert!(p.more);
}

pub async fn open_actions(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "open.corp.example").await;
    let other = new_machine(store, &t, "open-other.corp.example").await;
    new_action(store, &other, RunAntiVirusScan, at(0)).await;

    let scan1 = new_action(store, &m, RunAntiVirusScan, at(1)).await;
    let restrict = new_action(store, &m, RestrictCodeExecution, at(2)).await;
    let scan2 = new_action(store, &m, RunAntiVirusScan, at(3)).await;
    let scan3 = new_action(store, &m, RunAntiVirusScan, at(3)).await;
    must_apply(store, &scan1.id, change(Succeeded, at(4), "agent")).await;
    let restrict = must_apply(store, &restrict.id, change(InProgress, at(5), "agent")).await;
    assert_eq!(
        store.open_actions(&m.id).await.unwrap(),
        vec![restrict, scan2, scan3]
    );
    assert!(store
        .open_actions(&new_machine_id())
        .await
        .unwrap()
        .is_empty());
}

pub async fn last_succeeded_restrict_family(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "desired.corp.example").await;
    assert_eq!(
        store.last_succeeded_restrict_family(&m.id).await.unwrap(),
        None
    );

    let r = new_action(store, &m, RestrictCodeExecution, at(1)).await;
    let r = must_apply(store, &r.id, change(Succeeded, at(2), "agent")).await;
    assert_eq!(
        store.last_succeeded_restrict_family(&m.id).await.unwrap(),
        Some(r.clone())
    );

    let scan = new_action(store, &m, RunAntiVirusScan, at(3)).await;
    must_apply(store, &scan.id, change(Succeeded, at(4), "agent")).await;
    let failed = new_action(store, &m, UnrestrictCodeExecution, at(5)).await;
    must_apply(store, &failed.id, change(Failed, at(6), "agent")).await;
    assert_eq!(
        store.last_succeeded_restrict_family(&m.id).await.unwrap(),
        Some(r)
    );

    let u = new_action(store, &m, UnrestrictCodeExecution, at(7)).await;
    let u = must_apply(store, &u.id, change(Succeeded, at(8), "agent")).await;
    new_action(store, &m, RestrictCodeExecution, at(9)).await;
    assert_eq!(
        store.last_succeeded_restrict_family(&m.id).await.unwrap(),
        Some(u)
    );
}

/// What [`durability_write`] wrote, for [`durability_check`] after a reopen.
#[derive(Debug)]
pub struct Written {
    pub tenant: Tenant,
    pub machine: MachineRecord,
    pub action: ActionRecord,
}

pub async fn durability_write(store: &dyn Store) -> Written {
    let tenant = new_tenant(store).await;
    let machine = new_machine(store, &tenant, "durable.corp.example").await;
    let a = new_action(store, &machine, RestrictCodeExecution, at(1)).await;
    let action = must_apply(store, &a.id, change(InProgress, at(2), "agent")).await;
    Written {
        tenant,
        machine,
        action,
    }
}

pub async fn durability_check(store: &dyn Store, w: &Written) {
    assert_eq!(
        store.tenant(&w.tenant.id).await.unwrap().as_ref(),
        Some(&w.tenant)
    );
    assert_eq!(
        store
            .machine(&w.tenant.id, &MachineRef::Id(w.machine.id.clone()))
            .await
            .unwrap()
            .as_ref(),
        Some(&w.machine)
    );
    assert_eq!(
        store
            .action(&w.tenant.id, &w.action.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&w.action)
    );
    assert_eq!(store.audit_trail(&w.action.id).await.unwrap().len(), 2);
    // The duplicate rule survives too.
    let again = action_record(&w.machine, UnrestrictCodeExecution, at(3));
    assert!(is_duplicate(&store.create_action(&again).await));
}

/// Every check except the durability pair, in sequence on one store.
/// Device groups: a machine's group can be changed, and a scope limits both machine and
/// action lists (with `$count` and filters combined) to the machines of its groups.
pub async fn device_group_scopes(store: &dyn Store) {
    let t = new_tenant(store).await;
    let srv = new_machine(store, &t, "srv-1.corp").await;
    let web = new_machine(store, &t, "web-1.corp").await;
    let loose = new_machine(store, &t, "loose.corp").await;
    store
        .set_machine_groups(
            &t.id,
            &[
                GroupAssignment {
                    machine_id: srv.id.clone(),
                    rbac_group_id: 5,
                    rbac_group_name: Some("Servers".into()),
                },
                GroupAssignment {
                    machine_id: web.id.clone(),
                    rbac_group_id: 7,
                    rbac_group_name: Some("Web".into()),
                },
            ],
        )
        .await
        .unwrap();
    let m = store
        .machine(&t.id, &MachineRef::Id(srv.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.rbac_group_id, m.rbac_group_name.as_deref()),
        (5, Some("Servers"))
    );
    for m in [&srv, &web, &loose] {
        new_action(store, m, ActionType::RestrictCodeExecution, at(10)).await;
    }

    let counted: Query<MachineField> = Query {
        count: true,
        ..Query::default()
    };
    let names = |page: &Page<MachineRecord>| {
        let mut n: Vec<String> = page
            .items
            .iter()
            .map(|m| m.computer_dns_name.clone())
            .collect();
        n.sort();
        n
    };
    let scope = DeviceScope::Groups(vec![0, 5]);
    let page = store.list_machines(&t.id, &scope, &counted).await.unwrap();
    assert_eq!(names(&page), ["loose.corp", "srv-1.corp"]);
    assert_eq!(page.total, Some(2));
    let all = store
        .list_machines(&t.id, &DeviceScope::All, &counted)
        .await
        .unwrap();
    assert_eq!(all.total, Some(3));
    let only_ungrouped = DeviceScope::Groups(vec![0]);
    let page = store
        .list_machines(&t.id, &only_ungrouped, &counted)
        .await
        .unwrap();
    assert_eq!(names(&page), ["loose.corp"]);

    let counted_actions: Query<ActionField> = Query {
        count: true,
        ..Query::default()
    };
    let actions = store
        .list_actions(&t.id, &scope, &counted_actions)
        .await
        .unwrap();
    let mut machines: Vec<&str> = actions
        .items
        .iter()
        .map(|a| a.machine_id.as_str())
        .collect();
    machines.sort();
    let mut expected = vec![srv.id.as_str(), loose.id.as_str()];
    expected.sort();
    assert_eq!(machines, expected);
    assert_eq!(actions.total, Some(2));
    // The scope combines with a filter, whose placeholders come after the groups'.
    let filtered = Query {
        filter: Some(
            appfence_core::odata::parse_query::<ActionField>(&[(
                "$filter".to_string(),
                format!("machineId eq '{}'", web.id),
            )])
            .unwrap()
            .filter
            .unwrap(),
        ),
        count: true,
        ..Query::default()
    };
    let none = store.list_actions(&t.id, &scope, &filtered).await.unwrap();
    assert_eq!((none.items.len(), none.total), (0, Some(0)));
    let one = store
        .list_actions(&t.id, &DeviceScope::Groups(vec![0, 7]), &filtered)
        .await
        .unwrap();
    assert_eq!((one.items.len(), one.total), (1, Some(1)));
}

/// Users of the built-in issuer: found by UPN in any case, unique per tenant.
pub async fn users(store: &dyn Store) {
    let t = new_tenant(store).await;
    let other = new_tenant(store).await;
    let user = UserRecord {
        tenant_id: t.id.clone(),
        object_id: new_guid(),
        upn: "Ana@Example.com".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        groups: vec!["g-analysts".into(), "g-2".into()],
        created: at(5),
        disabled: None,
    };
    store.insert_user(&user).await.unwrap();
    let found = store.user(&t.id, "ANA@example.COM").await.unwrap().unwrap();
    assert_eq!(found.upn, "ana@example.com");
    assert_eq!(found.groups, user.groups);
    assert_eq!(found.object_id, user.object_id);
    assert_eq!(found.password_hash, user.password_hash);
    assert_eq!(found.created, at(5));
    assert!(store
        .user(&other.id, "ana@example.com")
        .await
        .unwrap()
        .is_none());
    let again = UserRecord {
        object_id: new_guid(),
        ..user.clone()
    };
    match store.insert_user(&again).await {
        Err(appfence_core::Error::BadRequest(m)) => assert!(m.contains("already exists"), "{m}"),
        other => panic!("expected BadRequest, got {other:?}"),
    }
    // The same UPN in another tenant is another user.
    store
        .insert_user(&UserRecord {
            tenant_id: other.id.clone(),
            object_id: new_guid(),
            ..user
        })
        .await
        .unwrap();
}

/// A session of the web console, signed in at `created` for eight hours.
pub fn console_session(
    tenant_id: &str,
    user_object_id: &str,
    created: Timestamp,
) -> ConsoleSession {
    ConsoleSession {
        id_sha256: random_sha256(),
        tenant_id: tenant_id.to_string(),
        user_object_id: user_object_id.to_string(),
        upn: "ana@example.com".into(),
        groups: vec!["g-analysts".into(), "g-2".into()],
        issuer: "local".into(),
        created,
        last_seen: created,
        expires: created.plus(std::time::Duration::from_secs(8 * 3600)),
    }
}

/// Sessions of the web console: stored whole, found by their hash only, touched,
/// deleted one by one or by user (within a tenant), counted per user.
pub async fn console_sessions(store: &dyn Store) {
    let t = new_tenant(store).await;
    let other = new_tenant(store).await;
    let (ana, bo) = (new_guid(), new_guid());
    let s = ConsoleSession {
        upn: "Ana@Example.com".into(),
        groups: vec!["g-analysts".into(), "g-2".into(), "Gruppe ü".into()],
        issuer: "https://login.example.com/contoso/v2.0".into(),
        last_seen: at(10),
        expires: at(3600),
        ..console_session(&t.id, &ana, at(0))
    };
    store.insert_console_session(&s).await.unwrap();
    assert_eq!(
        store.console_session(&s.id_sha256).await.unwrap(),
        Some(s.clone())
    );
    // Only the exact hash finds it.
    assert_eq!(store.console_session(&random_sha256()).await.unwrap(), None);
    assert_eq!(
        store
            .console_session(&s.id_sha256.to_uppercase())
            .await
            .unwrap(),
        None
    );
    // A second session with the same hash is refused and replaces nothing.
    let same_hash = ConsoleSession {
        id_sha256: s.id_sha256.clone(),
        ..console_session(&other.id, &bo, at(5))
    };
    assert!(store.insert_console_session(&same_hash).await.is_err());
    assert_eq!(
        store.console_session(&s.id_sha256).await.unwrap(),
        Some(s.clone())
    );
    // No groups is an empty list, not an error.
    let no_groups = ConsoleSession {
        groups: Vec::new(),
        ..console_session(&t.id, &bo, at(1))
    };
    store.insert_console_session(&no_groups).await.unwrap();
    assert_eq!(
        store.console_session(&no_groups.id_sha256).await.unwrap(),
        Some(no_groups.clone())
    );

    // A touch moves last_seen and nothing else; never back; false for no session.
    assert!(store
        .touch_console_session(&s.id_sha256, at(20))
        .await
        .unwrap());
    let touched = ConsoleSession {
        last_seen: at(20),
        ..s.clone()
    };
    assert_eq!(
        store.console_session(&s.id_sha256).await.unwrap(),
        Some(touched.clone())
    );
    assert!(store
        .touch_console_session(&s.id_sha256, at(15))
        .await
        .unwrap());
    assert_eq!(
        store.console_session(&s.id_sha256).await.unwrap(),
        Some(touched.clone())
    );
    assert!(!store
        .touch_console_session(&random_sha256(), at(20))
        .await
        .unwrap());
    // An expired session is still returned (and touched): the caller decides.
    assert!(store
        .touch_console_session(&s.id_sha256, at(4000))
        .await
        .unwrap());
    let over = store.console_session(&s.id_sha256).await.unwrap().unwrap();
    assert_eq!(over.last_seen, at(4000));
    assert!(over.is_over(at(4000), std::time::Duration::from_secs(600)));

    // Counted per user within a tenant: the same oid in another tenant is another user.
    for i in 0..2 {
        store
            .insert_console_session(&console_session(&t.id, &ana, at(100 + i)))
            .await
            .unwrap();
    }
    store
        .insert_console_session(&console_session(&other.id, &ana, at(100)))
        .await
        .unwrap();
    let count = |tenant: &str, user: &str| {
        let (tenant, user) = (tenant.to_string(), user.to_string());
        async move {
            store
                .count_console_sessions_of_user(&tenant, &user)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(&t.id, &ana).await, 3);
    assert_eq!(count(&t.id, &bo).await, 1);
    assert_eq!(count(&other.id, &ana).await, 1);
    assert_eq!(count(&other.id, &bo).await, 0);
    assert_eq!(count(&t.id, &new_guid()).await, 0);

    // Sign-out: true once, then false.
    assert!(store.delete_console_session(&s.id_sha256).await.unwrap());
    assert!(!store.delete_console_session(&s.id_sha256).await.unwrap());
    assert_eq!(store.console_session(&s.id_sha256).await.unwrap(), None);
    assert_eq!(count(&t.id, &ana).await, 2);

    // A user's sessions go, in that tenant only; another user's stay.
    assert_eq!(
        store
            .delete_console_sessions_of_user(&t.id, &ana)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .delete_console_sessions_of_user(&t.id, &ana)
            .await
            .unwrap(),
        0
    );
    assert_eq!(count(&t.id, &ana).await, 0);
    assert_eq!(count(&other.id, &ana).await, 1);
    assert_eq!(
        store.console_session(&no_groups.id_sha256).await.unwrap(),
        Some(no_groups.clone())
    );
    for (tenant, user, n) in [(&t.id, &bo, 1), (&other.id, &ana, 1)] {
        assert_eq!(
            store
                .delete_console_sessions_of_user(tenant, user)
                .await
                .unwrap(),
            n
        );
    }
}

/// The sweeper's pruning: a session is over at its absolute expiry, or `idle` after
/// its last use, both boundaries included, exactly as `ConsoleSession::is_over` says.
/// Needs a store without other sessions (prune is store-wide; no other check makes any).
pub async fn prune_console_sessions(store: &dyn Store) {
    use std::time::Duration;
    let t = new_tenant(store).await;
    let user = new_guid();
    let idle = Duration::from_secs(600);
    let now = at(10_000);
    let tick = Duration::from_nanos(100);
    let session = |last_seen: Timestamp, expires: Timestamp| ConsoleSession {
        last_seen,
        expires,
        ..console_session(&t.id, &user, at(0))
    };
    let far = at(100_000);
    // (session, over at `now`)
    let cases = [
        // Absolute expiry, however recently used.
        (session(now, now), true),
        (session(now, now.plus(tick)), false),
        (session(now, at(1)), true),
        // Idle: last used `idle` ago exactly, or less by one tick.
        (session(now.minus(idle), far), true),
        (session(now.minus(idle).plus(tick), far), false),
        (session(at(0), far), true),
        // Used after `now` (another replica's clock ahead): not idle.
        (session(now.plus(idle), far), false),
    ];
    for (s, over) in &cases {
        assert_eq!(s.is_over(now, idle), *over, "{s:?}");
        store.insert_console_session(s).await.unwrap();
    }
    let n_over = cases.iter().filter(|(_, over)| *over).count() as u64;
    // Before `now`, only what was over then.
    assert_eq!(
        store
            .prune_console_sessions(at(1), Duration::from_secs(100_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.prune_console_sessions(now, idle).await.unwrap(),
        n_over - 1
    );
    assert_eq!(store.prune_console_sessions(now, idle).await.unwrap(), 0);
    for (s, over) in &cases {
        let found = store.console_session(&s.id_sha256).await.unwrap();
        assert_eq!(found.is_none(), *over, "{s:?}");
    }
    assert_eq!(
        store
            .count_console_sessions_of_user(&t.id, &user)
            .await
            .unwrap(),
        cases.len() as u64 - n_over
    );
    // An idle time beyond the range of timestamps ends nothing by itself (no overflow).
    assert_eq!(
        store
            .prune_console_sessions(now.plus(tick), Duration::MAX)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_console_sessions_of_user(&t.id, &user)
            .await
            .unwrap(),
        2
    );
}

pub fn submission(tenant_id: &str, value: &str, by: &str, at: Timestamp) -> IndicatorSubmission {
    IndicatorSubmission {
        tenant_id: tenant_id.to_string(),
        indicator_value: value.to_string(),
        indicator_type: "FileSha256".into(),
        action: "Allowed".into(),
        application: Some("build tools".into()),
        title: "allowed".into(),
        description: "contract check".into(),
        recommended_actions: None,
        severity: "Informational".into(),
        expiration_time: None,
        generate_alert: false,
        rbac_group_names: vec![],
        rbac_group_ids: vec![],
        submitted_by: by.to_string(),
        submitter_name: format!("{by} app"),
        source_type: "AadApp".into(),
        at,
    }
}

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// Submit creates, submitting the same type and value updates (keeping application,
/// createdBy, source), every change bumps the version, scopes and tenants are kept apart.
pub async fn indicators(store: &dyn Store) {
    let t = new_tenant(store).await;
    let other = new_tenant(store).await;
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), 0);
    let all = IndicatorScope::All;

    let a = store
        .submit_indicator(&submission(&t.id, &hash(1), "app-a", at(10)), &all)
        .await
        .unwrap();
    assert_eq!(
        (
            a.indicator_value.as_str(),
            a.created,
            a.last_update,
            a.last_updated_by.as_deref()
        ),
        (hash(1).as_str(), at(10), at(10), None)
    );
    assert_eq!(
        (a.source.as_str(), a.created_by.as_str()),
        ("app-a app", "app-a")
    );
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), 1);

    let mut again = submission(&t.id, &hash(1), "app-b", at(20));
    again.title = "renamed".into();
    again.application = Some("ignored on update".into());
    again.expiration_time = Some(at(1000));
    let updated = store.submit_indicator(&again, &all).await.unwrap();
    assert_eq!(updated.id, a.id, "same type and value: an update");
    assert_eq!(updated.title, "renamed");
    assert_eq!(updated.application.as_deref(), Some("build tools"));
    assert_eq!(updated.created_by, "app-a");
    assert_eq!(updated.created, at(10));
    assert_eq!(updated.last_update, at(20));
    assert_eq!(updated.last_updated_by.as_deref(), Some("app-b app"));
    assert_eq!(updated.expiration_time, Some(at(1000)));
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), 2);

    // An application that may change only its own indicators.
    let own = IndicatorScope::CreatedBy("app-b".into());
    let refused = store
        .submit_indicator(&submission(&t.id, &hash(1), "app-b", at(21)), &own)
        .await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    assert_eq!(
        store.allowlist_version(&t.id).await.unwrap(),
        2,
        "unchanged"
    );
    let b = store
        .submit_indicator(&submission(&t.id, &hash(2), "app-b", at(30)), &own)
        .await
        .unwrap();
    assert_ne!(b.id, a.id);
    assert!(!store.delete_indicator(&t.id, a.id, &own).await.unwrap());

    // The same value in another tenant is another indicator.
    let o = store
        .submit_indicator(&submission(&other.id, &hash(1), "app-a", at(40)), &all)
        .await
        .unwrap();
    assert_ne!(o.id, a.id);
    assert_eq!(store.allowlist_version(&other.id).await.unwrap(), 1);

    // Listing: newest first, filters on the MDE properties, tenant-scoped.
    let list = |q: Query<IndicatorField>| {
        let tenant = t.id.clone();
        async move { store.list_indicators(&tenant, &q).await.unwrap() }
    };
    let p = list(Query {
        count: true,
        ..Query::default()
    })
    .await;
    assert_eq!(
        p.items.iter().map(|i| i.id).collect::<Vec<_>>(),
        [b.id, a.id]
    );
    assert_eq!(p.total, Some(2));
    assert_eq!(p.items[1], updated, "records round-trip");
    let by = |field, v: &str| Query {
        filter: Some(cmp(field, CmpOp::Eq, text(v))),
        ..Query::default()
    };
    let p = list(by(IndicatorField::CreatedBy, "APP-B")).await;
    assert_eq!(p.items.iter().map(|i| i.id).collect::<Vec<_>>(), [b.id]);
    let p = list(by(IndicatorField::IndicatorValue, &hash(1).to_uppercase())).await;
    assert_eq!(p.items.iter().map(|i| i.id).collect::<Vec<_>>(), [a.id]);
    let p = list(by(IndicatorField::Id, &a.id.to_string())).await;
    assert_eq!(p.items.iter().map(|i| i.id).collect::<Vec<_>>(), [a.id]);
    let p = list(Query {
        filter: Some(cmp(
            IndicatorField::CreationTimeDateTimeUtc,
            CmpOp::Gt,
            Value::Timestamp(at(15)),
        )),
        order_by: vec![(IndicatorField::IndicatorValue, Direction::Asc)],
        ..Query::default()
    })
    .await;
    assert_eq!(p.items.iter().map(|i| i.id).collect::<Vec<_>>(), [b.id]);

    // The allowlist: sorted hashes of unexpired Allowed FileSha256 indicators.
    let allow = store.allowlist(&t.id, 0, at(50)).await.unwrap();
    assert_eq!((allow.version, allow.sha256), (3, vec![hash(1), hash(2)]));
    let later = store.allowlist(&t.id, 0, at(1000)).await.unwrap();
    assert_eq!(later.sha256, vec![hash(2)], "expired at 1000");

    // Deleting bumps the version; deleting again finds nothing.
    assert!(store.delete_indicator(&t.id, b.id, &all).await.unwrap());
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), 4);
    assert!(!store.delete_indicator(&t.id, b.id, &all).await.unwrap());
    assert!(!store.delete_indicator(&other.id, a.id, &all).await.unwrap());
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), 4);

    // Expiry deletes and bumps only the tenants concerned.
    assert_eq!(store.delete_expired_indicators(at(999)).await.unwrap(), 0);
    assert_eq!(store.delete_expired_indicators(at(1000)).await.unwrap(), 1);
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), 5);
    assert_eq!(store.allowlist_version(&other.id).await.unwrap(), 1);
    assert!(list(Query::default()).await.items.is_empty());
    // Ids are never reused.
    let c = store
        .submit_indicator(&submission(&t.id, &hash(3), "app-a", at(60)), &all)
        .await
        .unwrap();
    assert!(c.id > b.id, "{} after {}", c.id, b.id);
}

/// Block and audit indicators scoped to device groups: they round-trip, the policy of
/// a device keeps what applies to its group and is unexpired, block over allow; a batch
/// stores what it may in one transaction (one version bump) and refuses the rest one by
/// one.
pub async fn file_policy(store: &dyn Store) {
    let t = new_tenant(store).await;
    let all = IndicatorScope::All;
    let with = |n: u8, action: &str, groups: &[(i64, &str)], at_s: i64| {
        let mut s = submission(&t.id, &hash(n), "app-a", at(at_s));
        s.action = action.into();
        s.rbac_group_ids = groups.iter().map(|g| g.0).collect();
        s.rbac_group_names = groups.iter().map(|g| g.1.to_string()).collect();
        s
    };
    let block = store
        .submit_indicator(&with(1, "Block", &[], 10), &all)
        .await
        .unwrap();
    let mut audit = with(2, "Audit", &[(7, "Web"), (9, "Db")], 11);
    audit.generate_alert = true;
    audit.expiration_time = Some(at(500));
    let audit = store.submit_indicator(&audit, &all).await.unwrap();
    assert_eq!(audit.rbac_group_names, ["Web", "Db"]);
    assert_eq!(audit.rbac_group_ids, [7, 9]);
    assert_eq!(audit.to_wire(None).rbac_group_ids, ["7", "9"]);
    let listed = store
        .list_indicators(&t.id, &Query::default())
        .await
        .unwrap();
    assert!(listed.items.contains(&audit), "groups round-trip");
    store
        .submit_indicator(&with(3, "Allowed", &[(9, "Db")], 12), &all)
        .await
        .unwrap();
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), 3);

    let web = store.allowlist(&t.id, 7, at(100)).await.unwrap();
    assert_eq!(web.version, 3);
    assert!(web.sha256.is_empty());
    assert_eq!(
        web.block
            .iter()
            .map(|r| (r.sha256.as_str(), r.indicator_id.clone()))
            .collect::<Vec<_>>(),
        [(hash(1).as_str(), block.id.to_string())]
    );
    assert_eq!(web.audit.len(), 1);
    assert!(web.audit[0].generate_alert);
    assert_eq!(web.next_expiry, Some(at(500)));
    let db = store.allowlist(&t.id, 9, at(100)).await.unwrap();
    assert_eq!(db.sha256, [hash(3)]);
    let ungrouped = store.allowlist(&t.id, 0, at(100)).await.unwrap();
    assert_eq!((ungrouped.block.len(), ungrouped.audit.len()), (1, 0));
    assert!(ungrouped.sha256.is_empty());
    let web_later = store.allowlist(&t.id, 7, at(500)).await.unwrap();
    assert!(web_later.audit.is_empty(), "expired at 500");
    assert_eq!(web_later.next_expiry, None);

    // Re-submitting the allowed file as a block turns it into one: one rule per file.
    let turned = store
        .submit_indicator(&with(3, "AlertAndBlock", &[], 20), &all)
        .await
        .unwrap();
    let db = store.allowlist(&t.id, 9, at(100)).await.unwrap();
    assert!(db.sha256.is_empty());
    assert!(db
        .block
        .iter()
        .any(|r| r.indicator_id == turned.id.to_string()));

    // A batch: one refused (another application's), the others stored, one bump.
    let own = IndicatorScope::CreatedBy("app-b".into());
    let mut mine = with(4, "Block", &[], 30);
    mine.submitted_by = "app-b".into();
    let mut theirs = with(1, "Audit", &[], 30);
    theirs.submitted_by = "app-b".into();
    let mut mine_too = with(5, "Allowed", &[], 30);
    mine_too.submitted_by = "app-b".into();
    let before = store.allowlist_version(&t.id).await.unwrap();
    let outcomes = store
        .submit_indicators(&[mine, theirs, mine_too], &own)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(
        matches!(outcomes[1], Err(Error::Forbidden(_))),
        "{outcomes:?}"
    );
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), before + 1);
    let unchanged = store.allowlist(&t.id, 0, at(100)).await.unwrap();
    assert!(unchanged.block.iter().any(|r| r.sha256 == hash(1)));
    // Nothing stored: no bump.
    let mut refused = with(1, "Block", &[], 31);
    refused.submitted_by = "app-b".into();
    let outcomes = store.submit_indicators(&[refused], &own).await.unwrap();
    assert!(outcomes[0].is_err());
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), before + 1);
    assert!(store.submit_indicators(&[], &own).await.unwrap().is_empty());
}

/// The protected files devices report come back with their machine; other tenants'
/// stay apart.
pub async fn protected_files(store: &dyn Store) {
    let t = new_tenant(store).await;
    let other = new_tenant(store).await;
    let m = new_machine(store, &t, "protected.corp.example").await;
    new_machine(store, &other, "protected.corp.example").await;
    assert!(store.protected_files(&t.id).await.unwrap().is_empty());
    let file = |n: u8, role| appfence_proto::agent::ProtectedFile {
        sha256: hash(n),
        path: format!("/p/{n}"),
        role,
    };
    let enforcement = EnforcementState {
        protected: vec![
            file(1, appfence_proto::agent::ProtectedRole::Agent),
            file(2, appfence_proto::agent::ProtectedRole::Loader),
            file(3, appfence_proto::agent::ProtectedRole::Init),
        ],
        ..EnforcementState::default()
    };
    store
        .record_heartbeat(&m.id, &DeviceInfo::default(), &enforcement, at(10))
        .await
        .unwrap();
    let mut hits = store.protected_files(&t.id).await.unwrap();
    hits.sort_by(|a, b| a.file.sha256.cmp(&b.file.sha256));
    assert_eq!(
        hits.iter().map(|h| h.file.clone()).collect::<Vec<_>>(),
        enforcement.protected
    );
    assert!(hits
        .iter()
        .all(|h| h.machine_id == m.id && h.computer_dns_name == m.computer_dns_name));
    assert!(store.protected_files(&other.id).await.unwrap().is_empty());
}

/// Update machine: tags replaced, device value set, nothing else touched; a group move
/// bumps the policy version, a change that moves nothing does not.
pub async fn update_machine(store: &dyn Store) {
    let t = new_tenant(store).await;
    let m = new_machine(store, &t, "update.corp.example").await;
    let group_of = |m: &MachineRecord| {
        if m.machine_tags.iter().any(|t| t.eq_ignore_ascii_case("web")) {
            (7, Some("Web".to_string()))
        } else {
            (0, None)
        }
    };
    let v0 = store.allowlist_version(&t.id).await.unwrap();
    let tags = vec!["web".to_string(), "Linux Fleet".to_string()];
    let updated = store
        .update_machine(&t.id, &m.id, Some(&tags), Some("High"), &group_of)
        .await
        .unwrap();
    assert_eq!(updated.machine_tags, tags);
    assert_eq!(updated.device_value, "High");
    assert_eq!(
        (updated.rbac_group_id, updated.rbac_group_name.as_deref()),
        (7, Some("Web"))
    );
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), v0 + 1);
    let stored = store
        .machine(&t.id, &MachineRef::Id(m.id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, updated);
    assert_eq!(stored.computer_dns_name, m.computer_dns_name);

    // The value alone: the tags and the group stay, no bump.
    let low = store
        .update_machine(&t.id, &m.id.to_uppercase(), None, Some("Low"), &group_of)
        .await
        .unwrap();
    assert_eq!(
        (low.device_value.as_str(), low.machine_tags.clone()),
        ("Low", tags)
    );
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), v0 + 1);
    // Tags replaced by none: back to ungrouped, bumped.
    let cleared = store
        .update_machine(&t.id, &m.id, Some(&[]), None, &group_of)
        .await
        .unwrap();
    assert!(cleared.machine_tags.is_empty());
    assert_eq!(
        (cleared.rbac_group_id, cleared.device_value.as_str()),
        (0, "Low")
    );
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), v0 + 2);
    // A tag call that moves the machine bumps too.
    store
        .change_machine_tag(&t.id, &[m.id.clone()], "WEB", true, &group_of)
        .await
        .unwrap();
    assert_eq!(store.allowlist_version(&t.id).await.unwrap(), v0 + 3);

    let missing = store
        .update_machine(&t.id, &"0".repeat(40), None, Some("Low"), &group_of)
        .await;
    assert!(
        matches!(missing, Err(Error::ResourceNotFound(_))),
        "{missing:?}"
    );
    let other = new_tenant(store).await;
    let foreign = store
        .update_machine(&other.id, &m.id, None, Some("Low"), &group_of)
        .await;
    assert!(
        matches!(foreign, Err(Error::ResourceNotFound(_))),
        "{foreign:?}"
    );
}

pub fn denial(seconds: i64, path: &str) -> DenialEvent {
    DenialEvent {
        time: at(seconds),
        path: path.to_string(),
        sha256: Some(hash(9)),
        pid: 4242,
        uid: Some(1000),
        parent: Some("/usr/bin/bash".into()),
        kind: DenialKind::Exec,
        monitor: false,
        rule: None,
        indicator_id: None,
        alert: false,
        command_line: None,
        user: None,
    }
}

/// Batches are stored whole, listed newest first per machine and device group, and
/// trimmed to the newest `MAX_EVENTS_PER_MACHINE`.
pub async fn denial_events(store: &dyn Store) {
    let t = new_tenant(store).await;
    let mut web = machine_record(&t.id, "events-web.example");
    web.rbac_group_id = 5;
    store.insert_machine(&web).await.unwrap();
    let db = new_machine(store, &t, "events-db.example").await;

    let mut elf = denial(3, "/tmp/libx.so");
    elf.kind = DenialKind::ElfOpen;
    elf.monitor = true;
    elf.sha256 = None;
    elf.uid = None;
    elf.parent = None;
    // An audit indicator's report: what decided it travels with the event.
    elf.rule = Some(appfence_proto::agent::RuleOutcome::Audited);
    elf.indicator_id = Some("17".into());
    elf.alert = true;
    store
        .record_denials(
            &web,
            &[denial(1, "/tmp/a"), denial(2, "/tmp/b"), elf.clone()],
            &[],
            at(10),
        )
        .await
        .unwrap();
    store
        .record_denials(&db, &[denial(5, "/tmp/c")], &[], at(11))
        .await
        .unwrap();
    store.record_denials(&db, &[], &[], at(12)).await.unwrap();

    let list = |scope: DeviceScope, q: Query<EventField>| {
        let tenant = t.id.clone();
        async move { store.list_denials(&tenant, &scope, &q).await.unwrap() }
    };
    let on = |m: &MachineRecord| Query {
        filter: Some(cmp(EventField::MachineId, CmpOp::Eq, text(&m.id))),
        count: true,
        ..Query::default()
    };
    let p = list(DeviceScope::All, on(&web)).await;
    let paths: Vec<&str> = p.items.iter().map(|e| e.event.path.as_str()).collect();
    assert_eq!(paths, ["/tmp/libx.so", "/tmp/b", "/tmp/a"]);
    assert_eq!(p.total, Some(3));
    assert_eq!(p.items[0].event, elf, "events round-trip");
    assert_eq!(p.items[0].computer_dns_name, "events-web.example");
    assert_eq!(p.items[1].event, denial(2, "/tmp/b"));

    let p = list(
        DeviceScope::All,
        Query {
            top: Some(1),
            skip: 1,
            ..on(&web)
        },
    )
    .await;
    assert_eq!(p.items[0].event.path, "/tmp/b");
    assert!(p.more);
    let p = list(
        DeviceScope::All,
        Query {
            filter: Some(cmp(EventField::Kind, CmpOp::Eq, text("elfOpen"))),
            ..Query::default()
        },
    )
    .await;
    assert_eq!(p.items.len(), 1);

    // Device groups: group 5 is not visible to this caller.
    let p = list(DeviceScope::Groups(vec![0]), Query::default()).await;
    let paths: Vec<&str> = p.items.iter().map(|e| e.event.path.as_str()).collect();
    assert_eq!(paths, ["/tmp/c"]);
    let stranger = new_tenant(store).await;
    assert!(store
        .list_denials(&stranger.id, &DeviceScope::All, &Query::default())
        .await
        .unwrap()
        .items
        .is_empty());

    // Retention: the newest MAX_EVENTS_PER_MACHINE stay.
    let many: Vec<DenialEvent> = (0..MAX_EVENTS_PER_MACHINE as i64 + 2)
        .map(|i| denial(100 + i, &format!("/tmp/many-{i}")))
        .collect();
    store.record_denials(&db, &many, &[], at(20)).await.unwrap();
    let p = list(
        DeviceScope::All,
        Query {
            top: Some(1),
            ..on(&db)
        },
    )
    .await;
    assert_eq!(p.total, Some(MAX_EVENTS_PER_MACHINE as u64));
    assert_eq!(
        p.items[0].event.path,
        format!("/tmp/many-{}", MAX_EVENTS_PER_MACHINE + 1)
    );
    let oldest = list(
        DeviceScope::All,
        Query {
            top: Some(1),
            order_by: vec![(EventField::Time, Direction::Asc)],
            ..on(&db)
        },
    )
    .await;
    assert_eq!(oldest.items[0].event.path, "/tmp/many-2");
    // The other machine's events are untouched.
    assert_eq!(list(DeviceScope::All, on(&web)).await.total, Some(3));
}

/// Following the continuation (`Page::last_key` into `Query::after`) page by page gives
/// every row exactly once, in the order of one big page, for every orderable field of
/// the actions in both directions (ties, nulls and mixed case included), under a filter,
/// and with the default order; `$count` stays the total.
pub async fn keyset_pages(store: &dyn Store) {
    use appfence_core::odata::KeyValue;
    let t = new_tenant(store).await;
    let ms = [
        new_machine(store, &t, "keyset-b.corp.example").await,
        new_machine(store, &t, "Keyset-A.corp.example").await,
        new_machine(store, &t, "keyset-c.corp.example").await,
    ];
    let requestors = ["app3", "APP3", "Bob@contoso.com", "alice@contoso.com"];
    for i in 0..23i64 {
        let m = &ms[(i % 3) as usize];
        let kind = [RunAntiVirusScan, Isolate, CollectInvestigationPackage][(i % 3) as usize];
        // Many ties in creation time; a third without an externalId.
        let mut a = action_record(m, kind, at(i / 4));
        a.requestor = requestors[(i % 4) as usize].into();
        a.external_id = (i % 3 != 0).then(|| format!("ext-{}", i % 5));
        store.create_action(&a).await.unwrap();
        if i % 4 == 1 {
            must_apply(store, &a.id, change(Cancelled, at(100 + i % 2), "someone")).await;
        }
    }
    let fields = [
        ActionField::Id,
        ActionField::Status,
        ActionField::MachineId,
        ActionField::Type,
        ActionField::Requestor,
        ActionField::CreationDateTimeUtc,
        ActionField::LastUpdateDateTimeUtc,
        ActionField::ComputerDnsName,
        ActionField::ExternalId,
    ];
    let mut orders: Vec<Vec<(ActionField, Direction)>> = vec![vec![]];
    for f in fields {
        orders.push(vec![(f, Direction::Asc)]);
        orders.push(vec![(f, Direction::Desc)]);
    }
    orders.push(vec![
        (ActionField::Requestor, Direction::Desc),
        (ActionField::ExternalId, Direction::Asc),
    ]);
    let filters = [
        None,
        Some(cmp(ActionField::Status, CmpOp::Ne, text("Cancelled"))),
    ];
    for order in &orders {
        for filter in &filters {
            let whole = store
                .list_actions(
                    &t.id,
                    &DeviceScope::All,
                    &Query {
                        filter: filter.clone(),
                        order_by: order.clone(),
                        top: Some(1000),
                        ..Query::default()
                    },
                )
                .await
                .unwrap();
            assert!(!whole.more && whole.last_key.is_none());
            let mut walked: Vec<String> = Vec::new();
            let mut after: Option<Vec<KeyValue>> = None;
            loop {
                let page = store
                    .list_actions(
                        &t.id,
                        &DeviceScope::All,
                        &Query {
                            filter: filter.clone(),
                            order_by: order.clone(),
                            top: Some(4),
                            count: true,
                            after: after.clone(),
                            ..Query::default()
                        },
                    )
                    .await
                    .unwrap();
                assert_eq!(page.total, Some(whole.items.len() as u64), "{order:?}");
                walked.extend(ids(&page.items));
                assert!(walked.len() <= whole.items.len(), "{order:?}: {walked:?}");
                if !page.more {
                    assert_eq!(page.last_key, None);
                    break;
                }
                after = Some(page.last_key.expect("a page with more has a last key"));
            }
            assert_eq!(walked, ids(&whole.items), "{order:?} {filter:?}");
        }
    }
    // A continuation that does not fit the order is refused, not run.
    let wrong = Query::<ActionField> {
        order_by: vec![(ActionField::Requestor, Direction::Asc)],
        after: Some(vec![KeyValue::Int(1), KeyValue::Int(2)]),
        ..Query::default()
    };
    let refused = store.list_actions(&t.id, &DeviceScope::All, &wrong).await;
    assert!(matches!(refused, Err(Error::OData(_))), "{refused:?}");
}

/// Filters from which the store derives conditions for its indexes (an upper bound on
/// the last update bounds the creation time; an equality on the external id uses a
/// partial index; a requestor's actions come from an index in the default order):
/// the same rows as the filter alone, in the same order, over pages too. A status change
/// dated before the action's creation (a clock set back) does not move the last update
/// before the creation, which the derived bound relies on.
pub async fn implied_filters(store: &dyn Store) {
    use appfence_core::odata::KeyValue;
    let t = new_tenant(store).await;
    let ms = [
        new_machine(store, &t, "implied-a.corp.example").await,
        new_machine(store, &t, "implied-b.corp.example").await,
    ];
    let requestors = ["app3", "Bob@contoso.com", "APP3"];
    for i in 0..18i64 {
        let mut a = action_record(&ms[(i % 2) as usize], RunAntiVirusScan, at(i / 2));
        a.requestor = requestors[(i % 3) as usize].into();
        a.external_id = (i % 3 != 0).then(|| format!("ext-{}", i % 4));
        store.create_action(&a).await.unwrap();
        if i % 3 != 2 {
            // Final at various times after the creation; two of them "before" it.
            let when = if i % 7 == 0 {
                at(i / 2)
            } else {
                at(i / 2 + 1 + i % 5)
            };
            let when = if i == 7 || i == 16 {
                Timestamp::from_ticks(at(i / 2).ticks() - 3)
            } else {
                when
            };
            let done = must_apply(store, &a.id, change(Cancelled, when, "someone")).await;
            assert!(done.last_update >= done.created, "{done:?}");
        }
    }
    let list = |filter: Option<Expr<ActionField>>, top: u32, after: Option<Vec<KeyValue>>| {
        let tenant = t.id.clone();
        async move {
            store
                .list_actions(
                    &tenant,
                    &DeviceScope::All,
                    &Query {
                        filter,
                        top: Some(top),
                        after,
                        count: true,
                        ..Query::default()
                    },
                )
                .await
                .unwrap()
        }
    };
    let everything = list(None, 1000, None).await.items;
    assert_eq!(everything.len(), 18);
    assert!(everything.iter().all(|a| a.last_update >= a.created));
    let last_update = |op: CmpOp, x: i64| {
        cmp(
            ActionField::LastUpdateDateTimeUtc,
            op,
            Value::Timestamp(at(x)),
        )
    };
    let mut cases: Vec<(Expr<ActionField>, Box<dyn Fn(&ActionRecord) -> bool>)> = Vec::new();
    for x in [0, 1, 3, 5, 8, 9, 12, 20] {
        let bound = at(x);
        cases.push((
            last_update(CmpOp::Lt, x),
            Box::new(move |a| a.last_update < bound),
        ));
        cases.push((
            last_update(CmpOp::Le, x),
            Box::new(move |a| a.last_update <= bound),
        ));
        cases.push((
            last_update(CmpOp::Eq, x),
            Box::new(move |a| a.last_update == bound),
        ));
        cases.push((
            and(
                cmp(ActionField::Status, CmpOp::Eq, text("Cancelled")),
                last_update(CmpOp::Lt, x),
            ),
            Box::new(move |a| a.status == Cancelled && a.last_update < bound),
        ));
        // Under OR nothing is derived: rows created after the bound still match.
        cases.push((
            Expr::Or(
                Box::new(last_update(CmpOp::Lt, x)),
                Box::new(cmp(
                    ActionField::Requestor,
                    CmpOp::Eq,
                    text("bob@contoso.com"),
                )),
            ),
            Box::new(move |a| a.last_update < bound || a.requestor == "Bob@contoso.com"),
        ));
    }
    for e in 0..5 {
        let want = format!("ext-{e}");
        cases.push((
            cmp(ActionField::ExternalId, CmpOp::Eq, text(&want)),
            Box::new(move |a| a.external_id.as_deref() == Some(want.as_str())),
        ));
    }
    cases.push((
        cmp(ActionField::ExternalId, CmpOp::Eq, Value::Null),
        Box::new(|a| a.external_id.is_none()),
    ));
    cases.push((
        cmp(ActionField::Requestor, CmpOp::Eq, text("app3")),
        Box::new(|a| a.requestor.eq_ignore_ascii_case("app3")),
    ));
    cases.push((
        and(
            cmp(ActionField::Requestor, CmpOp::Eq, text("BOB@contoso.com")),
            cmp(ActionField::Status, CmpOp::Eq, text("Pending")),
        ),
        Box::new(|a| a.requestor == "Bob@contoso.com" && a.status == Pending),
    ));
    for (filter, keep) in &cases {
        let want: Vec<String> = everything
            .iter()
            .filter(|a| keep(a))
            .map(|a| a.id.clone())
            .collect();
        let whole = list(Some(filter.clone()), 1000, None).await;
        assert_eq!(ids(&whole.items), want, "{filter:?}");
        assert_eq!(whole.total, Some(want.len() as u64), "{filter:?}");
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = list(Some(filter.clone()), 2, after).await;
            walked.extend(ids(&page.items));
            assert!(walked.len() <= want.len(), "{filter:?}");
            match page.last_key {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(walked, want, "{filter:?}: pages");
    }
}

/// Retention: final actions last updated before the cut-off go, in bounded batches;
/// newer final actions and open ones (however old) stay; the audit trail of a deleted
/// action stays readable. Denial events received before the cut-off go.
pub async fn retention(store: &dyn Store) {
    let t = new_tenant(store).await;
    let mut ms = Vec::new();
    for i in 0..6 {
        ms.push(new_machine(store, &t, &format!("retention-{i}.example")).await);
    }
    let cut = at(1000);
    let old_done = new_action(store, &ms[0], RestrictCodeExecution, at(100)).await;
    must_apply(store, &old_done.id, change(InProgress, at(150), "agent")).await;
    must_apply(store, &old_done.id, change(Succeeded, at(200), "agent")).await;
    let old_cancelled = new_action(store, &ms[1], RunAntiVirusScan, at(100)).await;
    must_apply(
        store,
        &old_cancelled.id,
        change(Cancelled, at(999), "someone"),
    )
    .await;
    // Created long ago, final only recently: kept.
    let recent_done = new_action(store, &ms[2], RestrictCodeExecution, at(100)).await;
    must_apply(store, &recent_done.id, change(Failed, at(1000), "agent")).await;
    // Open actions are never deleted, however old.
    let old_pending = new_action(store, &ms[3], RestrictCodeExecution, at(10)).await;
    let old_running = new_action(store, &ms[4], RunAntiVirusScan, at(10)).await;
    must_apply(store, &old_running.id, change(InProgress, at(20), "agent")).await;
    let new_done = new_action(store, &ms[5], Isolate, at(5000)).await;
    must_apply(store, &new_done.id, change(Succeeded, at(5001), "agent")).await;

    // Bounded: one row per call, then the rest (other checks' old actions included).
    assert_eq!(store.delete_old_actions(cut, 1).await.unwrap(), 1);
    while store.delete_old_actions(cut, 100).await.unwrap() == 100 {}
    assert_eq!(store.delete_old_actions(cut, 100).await.unwrap(), 0);

    for gone in [&old_done, &old_cancelled] {
        assert_eq!(store.action(&t.id, &gone.id).await.unwrap(), None);
    }
    for kept in [&recent_done, &old_pending, &old_running, &new_done] {
        assert!(
            store.action(&t.id, &kept.id).await.unwrap().is_some(),
            "{}",
            kept.id
        );
    }
    let listed = store
        .list_actions(&t.id, &DeviceScope::All, &Query::default())
        .await
        .unwrap();
    let mut listed = ids(&listed.items);
    listed.sort();
    let mut want = ids(&[recent_done.clone(), old_pending, old_running, new_done]);
    want.sort();
    assert_eq!(listed, want);
    // The audit trail outlives the action, whole.
    let trail = store.audit_trail(&old_done.id).await.unwrap();
    let steps: Vec<(Option<ActionStatus>, ActionStatus)> =
        trail.iter().map(|r| (r.from, r.to)).collect();
    assert_eq!(
        steps,
        [
            (None, Pending),
            (Some(Pending), InProgress),
            (Some(InProgress), Succeeded)
        ]
    );
    assert_eq!(store.audit_trail(&old_cancelled.id).await.unwrap().len(), 2);

    // Denial events by arrival.
    store
        .record_denials(&ms[0], &[denial(1, "/tmp/old")], &[], at(500))
        .await
        .unwrap();
    store
        .record_denials(&ms[0], &[denial(2, "/tmp/new")], &[], at(1500))
        .await
        .unwrap();
    while store.delete_old_denials(cut, 100).await.unwrap() == 100 {}
    let events = store
        .list_denials(&t.id, &DeviceScope::All, &Query::default())
        .await
        .unwrap();
    let paths: Vec<&str> = events.items.iter().map(|e| e.event.path.as_str()).collect();
    assert_eq!(paths, ["/tmp/new"]);
}

pub async fn run_all(store: Arc<dyn Store>) {
    let s = store.as_ref();
    tenants_apps_secrets_keys(s).await;
    password_grant_switch(s).await;
    signing_keys(s).await;
    concurrent_rotations(store.clone()).await;
    sign_in_throttle(s).await;
    audit_log(s).await;
    address_history(s).await;
    machine_tags(s).await;
    rate_limits(s).await;
    rate_limits_under_concurrency(store.clone()).await;
    machine_lookups(s).await;
    tenant_isolation(s).await;
    heartbeat(s).await;
    fleet_summary(s).await;
    reenrollment(s).await;
    duplicate_rule(s).await;
    other_types_not_blocked(s).await;
    duplicate_rule_under_concurrency(store.clone()).await;
    transition_rules(s).await;
    concurrent_cancel_and_complete(store.clone()).await;
    audit_trail(s).await;
    time_out_actions(s).await;
    offboarding(s).await;
    list_actions(s).await;
    list_machines(s).await;
    open_actions(s).await;
    last_succeeded_restrict_family(s).await;
    device_group_scopes(s).await;
    users(s).await;
    app_lifecycle(s).await;
    user_lifecycle(s).await;
    enroll_secret_lifecycle(s).await;
    enroll_secret_claims_under_concurrency(store.clone()).await;
    console_sessions(s).await;
    prune_console_sessions(s).await;
    oauth_grants(s).await;
    indicators(s).await;
    file_policy(s).await;
    protected_files(s).await;
    update_machine(s).await;
    denial_events(s).await;
    alerts(s).await;
    keyset_pages(s).await;
    implied_filters(s).await;
    // Last: it deletes every old final action of the store, the other checks' too.
    retention(s).await;
}

// ---------------------------------------------------------------- sign-in grants

fn grant(tenant: &Tenant, kind: &str, family: &str, status: &str, at_s: i64) -> OAuthGrant {
    OAuthGrant {
        id_sha256: random_sha256(),
        kind: kind.into(),
        tenant_id: tenant.id.clone(),
        client_id: new_guid(),
        family: family.into(),
        user_code_sha256: None,
        user_object_id: Some(new_guid()),
        upn: Some("ana@example.com".into()),
        status: status.into(),
        detail: r#"{"scopes":["openid"]}"#.into(),
        created: at(at_s),
        expires: at(at_s + 60),
        last_poll: None,
        poll_interval: None,
    }
}

/// Codes, device codes and refresh tokens: stored and read back exactly, one use wins
/// (compare and set), a family revoked together, polls recorded once, expired ones
/// pruned; client registrations created and replaced.
pub async fn oauth_grants(store: &dyn Store) {
    use appfence_core::grants::{kind, status};
    let t = new_tenant(store).await;
    let family = new_guid();
    let code = grant(&t, kind::CODE, &family, status::ACTIVE, 0);
    store.insert_oauth_grant(&code).await.unwrap();
    assert_eq!(
        store.oauth_grant(&code.id_sha256).await.unwrap(),
        Some(code.clone())
    );
    assert_eq!(store.oauth_grant(&random_sha256()).await.unwrap(), None);
    assert!(
        store.insert_oauth_grant(&code).await.is_err(),
        "never replaced"
    );
    // One redemption wins.
    assert!(store
        .set_oauth_grant_status(&code.id_sha256, status::ACTIVE, status::USED, None)
        .await
        .unwrap());
    assert!(!store
        .set_oauth_grant_status(&code.id_sha256, status::ACTIVE, status::USED, None)
        .await
        .unwrap());
    assert!(!store
        .set_oauth_grant_status(&random_sha256(), status::ACTIVE, status::USED, None)
        .await
        .unwrap());

    // A device code: found by its user code, approved with its user, polled.
    let device = OAuthGrant {
        user_code_sha256: Some(random_sha256()),
        user_object_id: None,
        upn: None,
        ..grant(&t, kind::DEVICE, &new_guid(), status::PENDING, 1)
    };
    store.insert_oauth_grant(&device).await.unwrap();
    let same_user_code = OAuthGrant {
        id_sha256: random_sha256(),
        ..device.clone()
    };
    assert!(
        store.insert_oauth_grant(&same_user_code).await.is_err(),
        "user codes are unique"
    );
    assert_eq!(
        store
            .oauth_grant_by_user_code(device.user_code_sha256.as_deref().unwrap())
            .await
            .unwrap(),
        Some(device.clone())
    );
    assert_eq!(
        store
            .oauth_grant_by_user_code(&random_sha256())
            .await
            .unwrap(),
        None
    );
    assert!(store
        .record_oauth_poll(&device.id_sha256, None, at(2), 5)
        .await
        .unwrap());
    assert!(
        !store
            .record_oauth_poll(&device.id_sha256, None, at(3), 5)
            .await
            .unwrap(),
        "another poll came first"
    );
    assert!(store
        .record_oauth_poll(&device.id_sha256, Some(at(2)), at(7), 10)
        .await
        .unwrap());
    // The interval the client was told to keep is remembered with the poll.
    let polled = store.oauth_grant(&device.id_sha256).await.unwrap().unwrap();
    assert_eq!(
        (polled.last_poll, polled.poll_interval),
        (Some(at(7)), Some(10))
    );
    assert!(store
        .set_oauth_grant_status(
            &device.id_sha256,
            status::PENDING,
            status::APPROVED,
            Some(("oid-1", "bo@example.com"))
        )
        .await
        .unwrap());
    let approved = store.oauth_grant(&device.id_sha256).await.unwrap().unwrap();
    assert_eq!(approved.status, status::APPROVED);
    assert_eq!(approved.user_object_id.as_deref(), Some("oid-1"));
    assert_eq!(approved.upn.as_deref(), Some("bo@example.com"));
    assert_eq!(approved.last_poll, Some(at(7)));

    // A family: revoked together, others untouched.
    let r1 = grant(&t, kind::REFRESH, &family, status::USED, 2);
    let r2 = OAuthGrant {
        expires: at(10_000),
        ..grant(&t, kind::REFRESH, &family, status::ACTIVE, 3)
    };
    let other = grant(&t, kind::REFRESH, &new_guid(), status::ACTIVE, 3);
    for g in [&r1, &r2, &other] {
        store.insert_oauth_grant(g).await.unwrap();
    }
    assert_eq!(store.revoke_oauth_family(&family).await.unwrap(), 3);
    assert_eq!(store.revoke_oauth_family(&family).await.unwrap(), 0);
    for g in [&code, &r1, &r2] {
        assert_eq!(
            store
                .oauth_grant(&g.id_sha256)
                .await
                .unwrap()
                .unwrap()
                .status,
            status::REVOKED
        );
    }
    assert_eq!(
        store
            .oauth_grant(&other.id_sha256)
            .await
            .unwrap()
            .unwrap()
            .status,
        status::ACTIVE
    );

    // Pruning: only what expired.
    assert!(store.prune_oauth_grants(at(70)).await.unwrap() >= 4);
    assert_eq!(store.oauth_grant(&code.id_sha256).await.unwrap(), None);
    assert!(store.oauth_grant(&r2.id_sha256).await.unwrap().is_some());

    // Client registrations.
    let client = ClientRegistration {
        tenant_id: t.id.clone(),
        client_id: new_guid(),
        public: true,
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
    };
    assert_eq!(
        store
            .client_registration(&t.id, &client.client_id)
            .await
            .unwrap(),
        None
    );
    store.upsert_client_registration(&client).await.unwrap();
    assert_eq!(
        store
            .client_registration(&t.id, &client.client_id)
            .await
            .unwrap(),
        Some(client.clone())
    );
    let changed = ClientRegistration {
        public: false,
        redirect_uris: vec![],
        ..client.clone()
    };
    store.upsert_client_registration(&changed).await.unwrap();
    assert_eq!(
        store
            .client_registration(&t.id, &client.client_id)
            .await
            .unwrap(),
        Some(changed)
    );
    let other_tenant = new_tenant(store).await;
    assert_eq!(
        store
            .client_registration(&other_tenant.id, &client.client_id)
            .await
            .unwrap(),
        None
    );
}
