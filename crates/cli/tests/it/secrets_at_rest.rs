//! Secrets at rest, tried as an attacker with a local account or a copy of the data
//! directory would: the data directory and every file in it are private (after a
//! restrict, a key rotation and a restart), an unprivileged user cannot read the
//! database, a copy without the key file signs nothing, a server on such a copy refuses
//! to start, and no secret reaches the log even at debug level.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use appfence_server::at_rest::KeyEncryptionKey;
use appfence_store::{SqliteStore, Store};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use crate::harness::{http_client, private_tempdir};
use crate::process::{free_port, run, start_serve, ChildGuard};
use crate::wire::Resp;

const START_LIMIT: Duration = Duration::from_secs(90);
const MDE: &str = "https://api.securitycenter.microsoft.com";

/// Whether this test runs as root (needed to act as another user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Every path under `dir` (itself included) with its permission bits.
fn modes(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), meta.permissions().mode() & 0o7777, meta.is_dir()));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// Directories `0700`, files `0600`, everywhere under `dir`.
fn assert_private(dir: &Path, when: &str) {
    let all = modes(dir);
    assert!(
        all.len() > 3,
        "{when}: the data directory is nearly empty: {all:?}"
    );
    for (path, mode, is_dir) in all {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{when}: {} has mode {mode:o}", path.display());
    }
}

async fn token(http: &reqwest::Client, demo: &Value) -> String {
    let r = Resp::read(
        http.post(demo["tokenUrl"].as_str().unwrap())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", demo["clientId"].as_str().unwrap()),
                ("client_secret", demo["clientSecret"].as_str().unwrap()),
                ("scope", &format!("{MDE}/.default")),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "token: {}", r.text);
    r.json()["access_token"].as_str().unwrap().to_string()
}

fn read_demo(data: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data.join("demo.json")).unwrap()).unwrap()
}

fn demo_args<'a>(data: &'a str, listen: &'a str) -> Vec<&'a str> {
    vec![
        "--demo",
        "--demo-devices",
        "2",
        "--demo-step-delay",
        "0s",
        "--listen",
        listen,
        "--data-dir",
        data,
    ]
}

/// The payload of a JWT as JSON.
fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn kid(token: &str) -> String {
    let part = token.split('.').next().unwrap();
    let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_string()
}

/// A token with `claims` and `kid`, signed with an Ed25519 key made from `seed`.
fn forge(seed: &[u8], kid: &str, claims: &Value) -> String {
    const PKCS8_ED25519_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(seed);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&der)).unwrap()
}

async fn get_status(http: &reqwest::Client, api: &str, token: &str) -> u16 {
    http.get(format!("{api}/machines"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Whether any file under `dir` holds `needle`.
fn found_in_files(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    modes(dir)
        .into_iter()
        .filter(|(_, _, is_dir)| !is_dir)
        .filter(|(p, _, _)| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .map(|(p, _, _)| p)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_data_directory_is_private_and_a_copy_of_it_forges_nothing() {
    let root = private_tempdir();
    let data = root.path().join("data");
    let data_s = data.to_str().unwrap().to_string();
    let logs = root.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let http = http_client();
    // Debug logs from every crate: no secret may show up in them.
    let env = [
        ("APPFENCE_LOG_LEVEL", "debug"),
        ("APPFENCE_KEY_REFRESH_INTERVAL", "1s"),
    ];
    let mut server = start_serve(
        &demo_args(&data_s, &listen),
        &env,
        &logs,
        "first",
        START_LIMIT,
    );
    assert_private(&data, "after the first start");

    // A restrict, and a token asked for with GET and the secret in the query string.
    let demo = read_demo(&data);
    let api = demo["apiBaseUrl"].as_str().unwrap().to_string();
    let tok = token(&http, &demo).await;
    let machine = demo["machines"][0].as_str().unwrap();
    let r = Resp::read(
        http.post(format!("{api}/machines/{machine}/restrictCodeExecution"))
            .bearer_auth(&tok)
            .header("Content-Type", "application/json")
            .body(r#"{"Comment":"private files"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v1 = demo["tokenUrl"]
        .as_str()
        .unwrap()
        .replace("/v2.0/token", "/token");
    let query = serde_urlencoded_pairs(&[
        ("grant_type", "client_credentials"),
        ("client_id", demo["clientId"].as_str().unwrap()),
        ("client_secret", demo["clientSecret"].as_str().unwrap()),
        ("resource", MDE),
    ]);
    let r = Resp::read(http.get(format!("{v1}?{query}")).send().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A user signs in with the password grant.
    let r = Resp::read(
        http.post(&v1)
            .form(&[
                ("grant_type", "password"),
                ("client_id", demo["clientId"].as_str().unwrap()),
                ("username", demo["analyst"]["username"].as_str().unwrap()),
                ("password", demo["analyst"]["password"].as_str().unwrap()),
                ("resource", MDE),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A rotation by the operator while the server runs.
    let rotated = run(
        &["keys", "rotate", "--data-dir", &data_s],
        &[("APPFENCE_KEY_REFRESH_INTERVAL", "1s")],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(rotated.code, Some(0), "{rotated:?}");
    assert!(rotated.stdout.contains("Added signing key"), "{rotated:?}");
    assert_private(&data, "after a restrict and a key rotation");

    server.terminate();
    server.wait(Duration::from_secs(30));
    let mut server = start_serve(
        &demo_args(&data_s, &listen),
        &env,
        &logs,
        "second",
        START_LIMIT,
    );
    assert_private(&data, "after a restart");
    server.terminate();
    server.wait(Duration::from_secs(30));

    // No secret reached the log.
    let demo = read_demo(&data);
    let log = format!(
        "{}{}",
        std::fs::read_to_string(logs.join("first.err")).unwrap(),
        std::fs::read_to_string(logs.join("second.err")).unwrap()
    );
    assert!(
        log.lines().count() > 50,
        "the debug log is suspiciously short"
    );
    let mut secrets = vec![
        demo["clientSecret"].as_str().unwrap().to_string(),
        demo["enrollSecret"].as_str().unwrap().to_string(),
        demo["analyst"]["password"].as_str().unwrap().to_string(),
        demo["viewer"]["password"].as_str().unwrap().to_string(),
        tok.clone(),
    ];
    for entry in std::fs::read_dir(data.join("demo-devices")).unwrap() {
        let cred = entry.unwrap().path().join("credential.json");
        if let Ok(text) = std::fs::read_to_string(cred) {
            let v: Value = serde_json::from_str(&text).unwrap();
            secrets.push(v["credential"].as_str().unwrap().to_string());
        }
    }
    assert!(
        secrets.len() >= 7,
        "device credentials were found: {}",
        secrets.len()
    );
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "a secret is in the debug log: {}...",
            &s[..8]
        );
    }

    // An unprivileged local user can neither read nor copy the database.
    if is_root() {
        for file in ["appfence.db", "master.key"] {
            let out = Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
                .arg(data.join(file))
                .output()
                .expect("setpriv runs");
            assert!(!out.status.success(), "nobody read {file}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
                "{out:?}"
            );
        }
    } else {
        println!("skipped: the check as another user needs root");
    }

    // A copy of the database without the key file (root can copy it).
    let copy_dir = root.path().join("copy");
    std::fs::create_dir(&copy_dir).unwrap();
    std::fs::set_permissions(&copy_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for f in ["appfence.db", "appfence.db-wal", "appfence.db-shm"] {
        if data.join(f).exists() {
            std::fs::copy(data.join(f), copy_dir.join(f)).unwrap();
        }
    }
    // Its contents: the public keys and the sealed private keys.
    let store = SqliteStore::open(&copy_dir.join("appfence.db"))
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    store.close().await;
    assert!(keys.len() >= 2, "the rotation added a key: {keys:?}");

    // The real keys, opened with the real key file, are in no file of either directory.
    let kek = KeyEncryptionKey::read(&data.join("master.key"), false)
        .unwrap()
        .unwrap();
    for key in keys.iter().filter(|k| k.retired.is_none()) {
        let sealed = key.sealed_private_key.as_ref().expect("sealed");
        let seed = kek
            .unseal(
                format!("appfence signing key {}", key.kid).as_bytes(),
                sealed,
            )
            .unwrap();
        assert!(
            found_in_files(&data, &seed).is_empty(),
            "{}: plain key on disk",
            key.kid
        );
        assert!(found_in_files(&copy_dir, &seed).is_empty());
    }

    // Forging from the copy: every 32 bytes of every stored key as the seed, under
    // every kid: all refused. (The server is started again on the original.)
    let server = start_serve(
        &demo_args(&data_s, &listen),
        &env,
        &logs,
        "third",
        START_LIMIT,
    );
    let demo = read_demo(&data);
    let real = token(&http, &demo).await;
    assert_eq!(get_status(&http, &api, &real).await, 200);
    let mut claims = claims(&real);
    claims["roles"] = serde_json::json!([
        "Machine.RestrictExecution",
        "Ti.ReadWrite.All",
        "Machine.Read.All"
    ]);
    let mut attempts = 0;
    for key in &keys {
        let blobs = [
            key.sealed_private_key.clone().unwrap_or_default(),
            key.public_key.clone(),
        ];
        for blob in blobs.iter().filter(|b| b.len() >= 32) {
            for seed in blob.windows(32) {
                let forged = forge(seed, &key.kid, &claims);
                assert_eq!(
                    get_status(&http, &api, &forged).await,
                    401,
                    "forged with {}",
                    key.kid
                );
                attempts += 1;
            }
        }
    }
    assert!(attempts > 50, "{attempts} forging attempts");
    drop(server);

    // A server on the copy, without the key file, refuses to start rather than make a
    // new key.
    let copy_s = copy_dir.to_str().unwrap();
    let listen2 = format!("127.0.0.1:{}", free_port());
    let refused = run(
        &["serve", "--data-dir", copy_s, "--listen", &listen2],
        &[],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("does not exist, but the database holds signing keys sealed"),
        "{refused:?}"
    );
    assert!(!copy_dir.join("master.key").exists(), "no key was made up");

    // A data directory others can read is refused, naming the fix.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let refused = run(
        &["serve", "--data-dir", &data_s, "--listen", &listen2],
        &[],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!("chmod 700 '{data_s}'")),
        "{refused:?}"
    );
}

/// `a=b&c=d`, form-encoded.
fn serde_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    let mut out = Vec::new();
    for (k, v) in pairs {
        let enc: String = v
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        out.push(format!("{k}={enc}"));
    }
    out.join("&")
}

/// A playbook polls the API, fetching a new token every few calls, while the operator
/// rotates the key: no call fails, the old token keeps working, new tokens carry the
/// new `kid`. Then the old key is retired: its token is refused within the refresh
/// interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_while_a_playbook_polls_then_retire() {
    let root = private_tempdir();
    let data = root.path().join("data");
    let data_s = data.to_str().unwrap().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [("APPFENCE_KEY_REFRESH_INTERVAL", "1s")];
    let _server: ChildGuard = start_serve(
        &demo_args(&data_s, &listen),
        &env,
        root.path(),
        "serve",
        START_LIMIT,
    );
    let http = http_client();
    let demo = read_demo(&data);
    let api = demo["apiBaseUrl"].as_str().unwrap().to_string();
    let first = token(&http, &demo).await;
    let old_kid = kid(&first);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (http, demo, api, stop) = (http.clone(), demo.clone(), api.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut calls, mut failures, mut kids) =
                (0u32, Vec::new(), std::collections::BTreeSet::new());
            let mut tok = token(&http, &demo).await;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if calls % 5 == 0 {
                    tok = token(&http, &demo).await;
                    kids.insert(kid(&tok));
                }
                let status = get_status(&http, &api, &tok).await;
                if status != 200 {
                    failures.push(status);
                }
                calls += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (calls, failures, kids)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rotated = run(
        &["keys", "rotate", "--data-dir", &data_s, "-o", "json"],
        &env,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(rotated.code, Some(0), "{rotated:?}");
    let new_kid = rotated.json()["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    // Published at once (so every verifier knows it), signing two refresh intervals
    // later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let t = token(&http, &demo).await;
        if kid(&t) == new_kid {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new tokens never carried {new_kid}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (calls, failures, kids) = poller.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {failures:?}",
        failures.len()
    );
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    // The old token still works (it has most of its hour to go).
    assert_eq!(get_status(&http, &api, &first).await, 200);
    let jwks: Value = http
        .get(format!(
            "{}/discovery/v2.0/keys",
            api.trim_end_matches("/api")
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(published, [new_kid.as_str(), old_kid.as_str()]);

    // Retired by hand (compromised): refused within the refresh interval.
    let retired = run(
        &["keys", "retire", &old_kid, "--data-dir", &data_s],
        &env,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(retired.code, Some(0), "{retired:?}");
    let start = tokio::time::Instant::now();
    while get_status(&http, &api, &first).await == 200 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the retired key still verifies"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "a retired key's token was refused after {:?}",
        start.elapsed()
    );
    let listed = run(
        &["keys", "list", "--data-dir", &data_s, "-o", "json"],
        &env,
        Duration::from_secs(30),
    )
    .await;
    let states: Vec<(String, String)> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_string(),
                k["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&(old_kid.clone(), "Retired".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&(new_kid.clone(), "Signing".into())),
        "{states:?}"
    );
    let again = run(
        &["keys", "retire", &old_kid, "--data-dir", &data_s],
        &env,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        again.code,
        Some(2),
        "a second retirement is a usage error: {again:?}"
    );
}

/// Two servers on one database and key file, as replicas: a key rotated on one is
/// used and accepted by both, and a retired key's tokens are refused by both within
/// the refresh interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_key_is_refused_by_every_replica() {
    use appfence_server::oauth::keyring;
    // Replicas behind one address share the public URL, which is in every token's issuer.
    let refresh = |c: &mut appfence_server::ServerConfig| {
        c.key_refresh_interval = Duration::from_millis(200);
        c.public_url = Some("https://appfence.test".into());
    };
    let a = crate::harness::TestServer::start_with(refresh, None).await;
    let b = a.replica(refresh).await;
    let app = a.app(&[crate::harness::ROLE_READ]).await;
    let status = |server: &crate::harness::TestServer, token: String| {
        let req = server
            .http
            .get(server.url("/api/machines"))
            .bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let old = a.token(&app).await;
    let old_kid = kid(&old);
    assert_eq!(status(&a, old.clone()).await, 200);
    assert_eq!(status(&b, old.clone()).await, 200);

    // A rotation that takes over at once (what `keys retire` does for a signing key).
    let state = &a.state;
    let added = keyring::rotate(
        state.store.as_ref(),
        state.keys.kek(),
        state.keys.timing(),
        state.clock.now(),
        true,
    )
    .await
    .unwrap()
    .expect("the rotation wins");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let new = loop {
        let t = a.token(&app).await;
        if kid(&t) == added.kid {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica A never signed with the new key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // B has not necessarily re-read the keys yet: an unknown kid makes it look.
    assert_eq!(status(&b, new.clone()).await, 200);

    let retired = keyring::retire(
        state.store.as_ref(),
        state.keys.kek(),
        state.keys.timing(),
        &old_kid,
        state.clock.now(),
        "test",
    )
    .await
    .unwrap()
    .expect("retired");
    assert_eq!(retired.replacement, None, "the old key no longer signed");
    for (name, server) in [("A", &a), ("B", &b)] {
        let start = tokio::time::Instant::now();
        while status(server, old.clone()).await == 200 {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "replica {name} still accepts a retired key"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status(server, new.clone()).await, 200, "replica {name}");
    }
    b.stop().await;
    a.stop().await;
}

/// The sweeper replaces the signing key after `signing_key_rotation` (injected clock):
/// the new key is published first, signs after its lead, and the old one verifies the
/// tokens it signed until they expire, then is retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_rotates_on_schedule() {
    use appfence_core::signing_keys::{state_at, KeyState};
    use appfence_core::Clock;
    let clock = std::sync::Arc::new(appfence_core::ManualClock::starting_now());
    let server = crate::harness::TestServer::start_with(
        |c| c.signing_key_rotation = Some(Duration::from_secs(90 * 24 * 3600)),
        Some(clock.clone()),
    )
    .await;
    let app = server.app(&[crate::harness::ROLE_READ]).await;
    let old = server.token(&app).await;
    let old_kid = kid(&old);
    clock.advance(Duration::from_secs(90 * 24 * 3600 - 60));
    appfence_server::sweeper::sweep_once(&server.state)
        .await
        .unwrap();
    assert_eq!(
        server.state.store.signing_keys().await.unwrap().len(),
        1,
        "not due yet"
    );
    clock.advance(Duration::from_secs(60));
    appfence_server::sweeper::sweep_once(&server.state)
        .await
        .unwrap();
    appfence_server::sweeper::sweep_once(&server.state)
        .await
        .unwrap();
    let keys = server.state.store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2, "one rotation, however many sweeps");
    let now = clock.now();
    assert!(matches!(
        state_at(&keys[0], &keys, now),
        KeyState::Next { .. }
    ));
    assert_eq!(state_at(&keys[1], &keys, now), KeyState::Signing);
    // After the lead (two refresh intervals), new tokens carry the new key.
    clock.advance(server.state.config.key_refresh_interval * 2);
    let fresh = server.token(&app).await;
    assert_eq!(kid(&fresh), keys[0].kid);
    assert_ne!(kid(&fresh), old_kid);
    // A token of the old key issued just before the handover works for its hour...
    let late_old = {
        clock.set(keys[0].activates.minus(Duration::from_secs(1)));
        server.token(&app).await
    };
    assert_eq!(kid(&late_old), old_kid);
    clock.set(keys[0].activates.plus(Duration::from_secs(3500)));
    let api = server.anonymous();
    assert_eq!(
        api.with_token(&late_old).get("/api/machines").await.status,
        200
    );
    // ...and the old key is retired once its last token has expired.
    clock.set(
        keys[1]
            .verify_until
            .expect("an end")
            .plus(Duration::from_secs(1)),
    );
    appfence_server::sweeper::sweep_once(&server.state)
        .await
        .unwrap();
    let keys = server.state.store.signing_keys().await.unwrap();
    let retired = keys.iter().find(|k| k.kid == old_kid).unwrap();
    assert!(retired.retired.is_some() && retired.sealed_private_key.is_none());
    let published = server.anonymous().get("/discovery/v2.0/keys").await.json();
    assert_eq!(published["keys"].as_array().unwrap().len(), 1);
}
