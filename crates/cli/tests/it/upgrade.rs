//! Upgrading a data directory written by the version before sealing (a database made by
//! `serve --demo` of that version, committed under `fixtures/v0_1`): the first start
//! seals the plain signing key (same key: tokens it signed stay valid), leaves no copy
//! of it in any file, and a client secret stored as Argon2id is accepted once and
//! re-stored in the fast form.

use std::path::Path;

use appfence_core::audit::SIGNING_KEYS_SEALED;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use sqlx::Row;

use crate::harness::{private_tempdir, TestServer, MDE_AUDIENCE};
use crate::wire::Resp;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/v0_1");

/// `(kid, plain seed)` of the one signing key, read the way the old version stored it.
async fn plain_key(db: &Path) -> (String, Vec<u8>) {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let row = sqlx::query("SELECT kid, private_key FROM signing_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    let out = (
        row.get::<String, _>("kid"),
        row.get::<Vec<u8>, _>("private_key"),
    );
    pool.close().await;
    out
}

fn every_file_holds_no(dir: &Path, needle: &[u8]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} still holds the plain signing key",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_seals_the_plain_key_and_rehashes_the_client_secret() {
    let dir = private_tempdir();
    let db = dir.path().join("appfence.db");
    std::fs::copy(Path::new(FIXTURE).join("appfence.db"), &db).unwrap();
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let demo: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(FIXTURE).join("demo.json")).unwrap(),
    )
    .unwrap();
    let (kid, seed) = plain_key(&db).await;
    assert_eq!(seed.len(), 32);
    let before = std::fs::read(&db).unwrap();
    assert!(
        before.windows(32).any(|w| w == seed.as_slice()),
        "the fixture holds the plain key"
    );

    let server = TestServer::start_in(dir.path(), |_| {}, None).await;

    // The plain key is gone from every file of the data directory, and from the schema.
    every_file_holds_no(dir.path(), &seed);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info('signing_keys')")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("name"))
        .collect();
    assert!(!columns.contains(&"private_key".to_string()), "{columns:?}");
    assert!(
        columns.contains(&"sealed_private_key".to_string()),
        "{columns:?}"
    );
    let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys_unsealed")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(waiting, 0);
    pool.close().await;
    let keys = server.state.store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1, "the same key, sealed: no new one");
    assert_eq!(keys[0].kid, kid);
    assert!(keys[0].sealed_private_key.is_some());
    let events = server.state.store.audit_events(0, 100).await.unwrap();
    assert!(events
        .iter()
        .any(|(_, e)| e.event == SIGNING_KEYS_SEALED && e.subject == kid));

    // The old key still signs and verifies (tokens issued before the upgrade keep
    // working): the server's tokens carry its kid, and the claims of one, signed in this
    // test with the old plain key as the old version would have, are accepted.
    let tenant = demo["tenantId"].as_str().unwrap();
    let reader = server.api(&["Machine.Read.All"]).await;
    let issued = reader.token.clone().unwrap();
    let header_of = |t: &str| -> Value {
        use base64::Engine;
        let part = t.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header_of(&issued)["kid"], kid.as_str());
    let claims: Value = {
        use base64::Engine;
        let part = issued.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.clone());
    let old_token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der)).unwrap();
    let r = Resp::read(
        server
            .http
            .get(server.url("/api/machines"))
            .bearer_auth(&old_token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The demo application's secret was stored as Argon2id: accepted, then re-stored.
    let client_id = demo["clientId"].as_str().unwrap();
    // Migrated (0015) into the application's first secret, which never expires.
    let secrets = server
        .state
        .store
        .app_secrets(tenant, client_id)
        .await
        .unwrap();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let legacy = secrets[0].clone();
    assert_eq!(legacy.expires, None);
    assert_eq!(legacy.hint, None);
    assert!(
        appfence_core::ids::parse_guid(&legacy.id).is_some(),
        "{}",
        legacy.id
    );
    assert!(
        legacy.secret_hash.starts_with("$argon2id$"),
        "{}",
        legacy.secret_hash
    );
    let ask = |secret: String| {
        let http = server.http.clone();
        let url = server.url(&format!("/{tenant}/oauth2/v2.0/token"));
        async move {
            Resp::read(
                http.post(url)
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("client_secret", secret.as_str()),
                        ("scope", &format!("{MDE_AUDIENCE}/.default")),
                    ])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let secret = demo["clientSecret"].as_str().unwrap().to_string();
    assert_eq!(
        ask(format!("{secret}x")).await.status,
        401,
        "a wrong secret changes nothing"
    );
    assert!(server
        .state
        .store
        .app_secrets(tenant, client_id)
        .await
        .unwrap()[0]
        .secret_hash
        .starts_with("$argon2id$"));
    let first = ask(secret.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let restored = server
        .state
        .store
        .app_secrets(tenant, client_id)
        .await
        .unwrap()[0]
        .clone();
    assert_eq!(restored.id, legacy.id);
    assert!(
        restored.secret_hash.starts_with("sha256:"),
        "{}",
        restored.secret_hash
    );
    assert_eq!(
        ask(secret.clone()).await.status,
        200,
        "the fast form verifies"
    );
    assert_eq!(ask(format!("{secret}x")).await.status, 401);
    server.stop().await;
}
