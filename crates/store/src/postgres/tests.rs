//! The store contract against PostgreSQL, each check on a fresh database of the
//! tests' throwaway cluster (`appfence-testkit`), plus what only PostgreSQL can answer:
//! migrations under concurrency, a newer schema refused, passwords kept out of errors.

use std::sync::Arc;

use appfence_testkit::postgres_or_skip;

use super::PgStore;
use crate::contract;

/// A store on a fresh database; `None` (skipped) where PostgreSQL cannot run.
pub(super) async fn fresh(test: &str) -> Option<Arc<PgStore>> {
    let cluster = postgres_or_skip(test)?;
    let url = cluster.fresh_database().expect("a fresh database");
    Some(Arc::new(PgStore::open(&url).await.expect("open the store")))
}

macro_rules! contract_checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $check() {
            let Some(store) = fresh(stringify!($check)).await else { return };
            contract::$check(store.as_ref()).await;
            store.close().await;
        }
    )*};
}

contract_checks!(
    fleet_summary,
    tenants_apps_secrets_keys,
    password_grant_switch,
    signing_keys,
    sign_in_throttle,
    audit_log,
    address_history,
    machine_tags,
    rate_limits,
    machine_lookups,
    tenant_isolation,
    heartbeat,
    reenrollment,
    duplicate_rule,
    other_types_not_blocked,
    transition_rules,
    audit_trail,
    time_out_actions,
    offboarding,
    list_actions,
    list_machines,
    open_actions,
    last_succeeded_restrict_family,
    device_group_scopes,
    users,
    app_lifecycle,
    user_lifecycle,
    enroll_secret_lifecycle,
    console_sessions,
    prune_console_sessions,
    oauth_grants,
    indicators,
    file_policy,
    protected_files,
    update_machine,
    denial_events,
    alerts,
    keyset_pages,
    implied_filters,
    retention,
);

#[tokio::test(flavor = "multi_thread")]
async fn enroll_secret_claims_under_concurrency() {
    let Some(store) = fresh("enroll_secret_claims_under_concurrency").await else {
        return;
    };
    contract::enroll_secret_claims_under_concurrency(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_rule_under_concurrency() {
    let Some(store) = fresh("duplicate_rule_under_concurrency").await else {
        return;
    };
    contract::duplicate_rule_under_concurrency(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_heartbeats() {
    let Some(store) = fresh("concurrent_heartbeats").await else {
        return;
    };
    contract::concurrent_heartbeats(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creations_on_many_devices() {
    let Some(store) = fresh("concurrent_creations_on_many_devices").await else {
        return;
    };
    contract::concurrent_creations_on_many_devices(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cancel_and_complete() {
    let Some(store) = fresh("concurrent_cancel_and_complete").await else {
        return;
    };
    contract::concurrent_cancel_and_complete(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_rotations() {
    let Some(store) = fresh("concurrent_rotations").await else {
        return;
    };
    contract::concurrent_rotations(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_under_concurrency() {
    let Some(store) = fresh("rate_limits_under_concurrency").await else {
        return;
    };
    contract::rate_limits_under_concurrency(store).await;
}

/// The checks also hold when they share one database.
#[tokio::test(flavor = "multi_thread")]
async fn run_all_on_one_database() {
    let Some(store) = fresh("run_all_on_one_database").await else {
        return;
    };
    contract::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn durable_across_reopen() {
    let Some(cluster) = postgres_or_skip("durable_across_reopen") else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let store = PgStore::open(&url).await.unwrap();
    let written = contract::durability_write(&store).await;
    store.close().await;
    let store = PgStore::open(&url).await.unwrap();
    contract::durability_check(&store, &written).await;
    store.close().await;
}

/// A database of the version before credential lifecycles (migrations up to 0005) with
/// an application and an enrolment secret: 0006 keeps both working. The application's
/// secret becomes its first secret with an id and no expiry; the enrolment secret gets
/// an id, no expiry, no limit and no uses.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_of_the_previous_version_are_migrated() {
    let Some(cluster) = postgres_or_skip("credentials_of_the_previous_version_are_migrated") else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let before = sqlx::migrate::Migrator {
        migrations: super::MIGRATOR
            .iter()
            .filter(|m| m.version < 6)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(&pool).await.unwrap();
    for statement in [
        "INSERT INTO tenants (id, name) VALUES ('t-1', 'Contoso')",
        "INSERT INTO apps (tenant_id, client_id, display_name, secret_hash, roles, created) \
         VALUES ('t-1', 'c-1', 'SOAR', 'sha256:abcd', '[\"Machine.Read.All\"]', 42)",
        "INSERT INTO enroll_secrets (secret_sha256, tenant_id, created) VALUES ('e-hash', 't-1', 43)",
        "INSERT INTO users (tenant_id, object_id, upn, password_hash, groups, created) \
         VALUES ('t-1', 'oid-1', 'ana@example.com', 'x', '[]', 44)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = PgStore::open(&url).await.unwrap();
    let app = crate::Store::app(&store, "t-1", "c-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((app.display_name.as_str(), app.disabled), ("SOAR", None));
    let secrets = crate::Store::app_secrets(&store, "t-1", "c-1")
        .await
        .unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].secret_hash, "sha256:abcd");
    assert_eq!((secrets[0].expires, secrets[0].hint.clone()), (None, None));
    assert_eq!(secrets[0].created.ticks(), 42);
    assert!(appfence_core::ids::parse_guid(&secrets[0].id).is_some());
    let enroll = crate::Store::enroll_secret(&store, "e-hash")
        .await
        .unwrap()
        .unwrap();
    assert!(appfence_core::ids::parse_guid(&enroll.id).is_some());
    assert_eq!(
        (enroll.expires, enroll.max_uses, enroll.uses, enroll.revoked),
        (None, None, 0, None)
    );
    let user = crate::Store::user(&store, "t-1", "ana@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.disabled, None);
    store.close().await;
}

/// Replicas starting at once migrate once; all of them work.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_starting_together_migrate_once() {
    let Some(cluster) = postgres_or_skip("replicas_starting_together_migrate_once") else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().expect("every replica starts"));
    }
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&stores[0].pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, super::MIGRATOR.iter().count());
    let t = contract::new_tenant(&stores[1]).await;
    assert!(crate::Store::tenant(&stores[3], &t.id)
        .await
        .unwrap()
        .is_some());
    for s in stores {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_urls_and_newer_schemas_are_clear_errors_without_the_password() {
    let Some(cluster) = postgres_or_skip("bad_urls_and_newer_schemas") else {
        return;
    };
    let err = PgStore::open("postgres://u:s3cr3t-pw@127.0.0.1:1/none")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot connect to the database postgres://u:***@127.0.0.1:1/none"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t-pw"), "{err}");
    let err = PgStore::open("mysql://x").await.unwrap_err().to_string();
    assert!(err.contains("not valid"), "{err}");
    // A database migrated by a newer appfence: refused, nothing half-done.
    let url = cluster.fresh_database().unwrap();
    let store = PgStore::open(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00', 0)",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    store.close().await;
    let err = PgStore::open(&url).await.unwrap_err().to_string();
    assert!(
        err.contains("schema version 9999") && err.contains("newer version"),
        "{err}"
    );
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        super::redact("postgres://app:pw@db:5432/x"),
        "postgres://app:***@db:5432/x"
    );
    assert_eq!(super::redact("postgres://db/x"), "postgres://db/x");
    assert_eq!(super::redact("garbage"), "(not a URL)");
}

/// What one replica publishes reaches every replica, itself included, each change at
/// least once however often it was published.
#[tokio::test(flavor = "multi_thread")]
async fn changes_reach_every_replica() {
    use crate::{Change, Store};
    use std::collections::HashMap;
    use std::time::Duration;

    let Some(cluster) = postgres_or_skip("changes_reach_every_replica") else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let a = PgStore::open(&url).await.unwrap();
    let b = PgStore::open(&url).await.unwrap();
    let mut heard_by_b = b.subscribe();
    let mut heard_by_a = a.subscribe();
    async fn next(rx: &mut tokio::sync::broadcast::Receiver<Change>) -> Change {
        loop {
            let change = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a change within 10 s")
                .expect("the feed is open");
            // Said when a listener (re)connects, and the hellos below: not the changes
            // this test looks for.
            if change != Change::Everything && change != Change::Tenant("hello".into()) {
                return change;
            }
        }
    }
    // Until both listen (a change before that is covered by their Everything), say hello.
    let hello = Change::Tenant("hello".into());
    for rx in [&mut heard_by_a, &mut heard_by_b] {
        loop {
            a.publish(&hello).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                Ok(Ok(c)) if c == hello => break,
                _ => continue,
            }
        }
    }

    let published = [
        Change::Machine("m1".into()),
        Change::Tenant("t1".into()),
        Change::Groups,
    ];
    for _ in 0..50 {
        for c in &published {
            a.publish(c).await.unwrap();
        }
    }
    for rx in [&mut heard_by_a, &mut heard_by_b] {
        let mut heard: HashMap<String, usize> = HashMap::new();
        while heard.len() < published.len() {
            *heard.entry(next(rx).await.payload()).or_default() += 1;
        }
        for c in &published {
            let n = heard[&c.payload()];
            assert!((1..=50).contains(&n), "{c:?} heard {n} times");
        }
    }
    a.close().await;
    b.close().await;
}

/// With the database stopped, one operation at a time waits for a connection; the
/// others are answered "unreachable" before it returns. Once it is back, all work.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_answered_at_once_and_recovered_from() {
    use appfence_core::{Error, StorageFault};
    let Some(cluster) = appfence_testkit::private_postgres_or_skip("unreachable database") else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let store = Arc::new(PgStore::open(&url).await.unwrap());
    let tenant = contract::new_tenant(store.as_ref()).await;
    cluster.stop().unwrap();

    // The first call finds the database gone (after waiting for a connection).
    let first = crate::Store::tenant(store.as_ref(), &tenant.id).await;
    assert!(
        matches!(
            first,
            Err(Error::Storage {
                fault: StorageFault::Unreachable,
                ..
            })
        ),
        "{first:?}"
    );
    assert!(store.outage.is_down());
    // A probe in flight (it waits up to the acquire timeout); the others meanwhile
    // are refused without waiting: they all finish while the probe still runs.
    let probe = tokio::spawn({
        let store = store.clone();
        let id = tenant.id.clone();
        async move { crate::Store::tenant(store.as_ref(), &id).await }
    });
    while !store
        .outage
        .probing
        .load(std::sync::atomic::Ordering::Acquire)
    {
        tokio::task::yield_now().await;
    }
    for _ in 0..20 {
        let r = crate::Store::tenant(store.as_ref(), &tenant.id).await;
        assert!(
            matches!(
                r,
                Err(Error::Storage {
                    fault: StorageFault::Unreachable,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    assert!(
        !probe.is_finished(),
        "the refusals did not wait for the probe"
    );
    assert!(probe.await.unwrap().is_err());

    cluster.start().unwrap();
    let mut answered = None;
    for _ in 0..100 {
        match crate::Store::tenant(store.as_ref(), &tenant.id).await {
            Ok(t) => {
                answered = t;
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert_eq!(answered.map(|t| t.id), Some(tenant.id.clone()));
    assert!(!store.outage.is_down());
    store.close().await;
}

/// `sslmode=verify-full` with the server's CA: the connection is encrypted (as
/// PostgreSQL itself reports); another CA, or TLS required of a server without it, is
/// refused with an error that names the problem and not the password.
#[tokio::test(flavor = "multi_thread")]
async fn connections_are_encrypted_and_verified_when_asked() {
    let Some(cluster) = appfence_testkit::private_postgres_or_skip("PostgreSQL over TLS") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.path().join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        (rcgen::Issuer::new(params, key), pem)
    };
    let (issuer, ca_pem) = ca("db-ca");
    let (_, other_ca) = ca("other-ca");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let plain = cluster.fresh_database().unwrap();
    // A server without TLS: requiring it fails.
    let e = PgStore::open(&format!("{plain}?sslmode=require"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot connect"), "{e}");

    cluster
        .enable_tls(&cert.pem(), &key.serialize_pem())
        .unwrap();
    let verified = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        ca_pem.display()
    );
    let store = PgStore::open(&verified)
        .await
        .expect("a verified TLS connection");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert!(encrypted, "PostgreSQL says the connection is not encrypted");
    contract::new_tenant(&store).await;
    store.close().await;

    let wrong = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    );
    let e = PgStore::open(&wrong).await.unwrap_err().to_string();
    assert!(
        e.contains("cannot connect") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
}
