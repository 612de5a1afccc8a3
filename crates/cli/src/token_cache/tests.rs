//! The cache's file, its keys and expiry, and a cached session refreshing against a
//! stand-in token endpoint that, like appfence's, rotates refresh tokens and revokes
//! the sign-in when an old one comes back.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use appfence_client::{ClientError, UserSession};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::*;

fn login(server: &str, tenant: &str, tenant_id: Option<&str>) -> CachedLogin {
    CachedLogin {
        server: server.into(),
        tenant: tenant.into(),
        tenant_id: tenant_id.map(str::to_string),
        client_id: "cli".into(),
        user: "ana@corp.example".into(),
        token_endpoint: format!("{server}/{tenant}/oauth2/v2.0/token"),
        access_token: "at-0".into(),
        expires_at: 1_000,
        refresh_token: Some("rt-0".into()),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_cache_is_under_xdg_config_home_else_home() {
    let at = |pairs: &[(&str, &str)]| {
        TokenCache::locate(&Env::from_pairs(pairs.iter().copied())).map(|c| c.path().to_path_buf())
    };
    assert_eq!(
        at(&[("HOME", "/home/ana"), ("XDG_CONFIG_HOME", "/cfg")]),
        Some(PathBuf::from("/cfg/appfence/tokens.json"))
    );
    assert_eq!(
        at(&[("HOME", "/home/ana")]),
        Some(PathBuf::from("/home/ana/.config/appfence/tokens.json"))
    );
    // A relative XDG_CONFIG_HOME is to be ignored (XDG Base Directory).
    assert_eq!(
        at(&[("HOME", "/home/ana"), ("XDG_CONFIG_HOME", "cfg")]),
        Some(PathBuf::from("/home/ana/.config/appfence/tokens.json"))
    );
    assert_eq!(at(&[]), None);
}

#[test]
fn servers_are_filed_in_one_spelling() {
    assert_eq!(
        normalise_server("HTTP://LocalHost:80/").unwrap(),
        "http://localhost"
    );
    assert_eq!(
        normalise_server("https://mde.example:8443").unwrap(),
        "https://mde.example:8443"
    );
    assert!(normalise_server("ftp://x").is_err());
    assert!(normalise_server("not a url").is_err());
}

#[test]
fn an_access_token_is_used_while_it_has_more_than_a_minute_left() {
    let l = login("http://a", "t", None);
    assert!(l.has_time_left(0));
    assert!(l.has_time_left(939));
    assert!(!l.has_time_left(940));
    assert!(!l.has_time_left(2_000));
    assert!(!l.has_time_left(u64::MAX));
}

#[test]
fn sign_ins_are_keyed_by_server_and_tenant() {
    let mut f = CacheFile::default();
    f.upsert(login("http://a", "demo", Some("T-1")));
    f.upsert(login("http://a", "other", Some("t-2")));
    f.upsert(login("http://b", "demo", Some("t-3")));
    assert_eq!(f.version, 1);
    // By the name given at sign-in, or the id, in any case.
    assert_eq!(f.position("http://a", Some("demo")).unwrap(), Some(0));
    assert_eq!(f.position("http://a", Some("t-1")).unwrap(), Some(0));
    assert_eq!(f.position("http://a", Some("T-2")).unwrap(), Some(1));
    assert_eq!(f.position("http://b", None).unwrap(), Some(2));
    assert_eq!(f.position("http://c", None).unwrap(), None);
    assert_eq!(f.position("http://b", Some("t-1")).unwrap(), None);
    // Without a tenant, two sign-ins to one server are ambiguous.
    let e = f.position("http://a", None).unwrap_err().to_string();
    assert!(e.contains("demo, other") && e.contains("--tenant"), "{e}");

    // Signing in again (by id this time) replaces, never duplicates.
    let mut again = login("http://a", "t-1", Some("t-1"));
    again.access_token = "at-new".into();
    f.upsert(again);
    assert_eq!(f.sessions.len(), 3);
    let i = f.position("http://a", Some("T-1")).unwrap().unwrap();
    assert_eq!(f.sessions[i].access_token, "at-new");
    assert_eq!(f.position("http://a", Some("demo")).unwrap(), None);

    let gone = f.remove("http://a", None);
    assert_eq!(gone.len(), 2);
    assert_eq!(f.sessions.len(), 1);
    assert!(f.remove("http://b", Some("nope")).is_empty());
}

#[test]
fn tokens_stay_out_of_debug_output() {
    let l = login("http://a", "t", None);
    let text = format!("{l:?}");
    assert!(!text.contains("at-0") && !text.contains("rt-0"), "{text}");
    assert!(text.contains("ana@corp.example"));
}

#[tokio::test]
async fn saving_writes_a_0600_file_in_a_0700_directory_and_reads_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = TokenCache::in_dir(tmp.path().join("config/appfence"));
    assert_eq!(cache.load().unwrap(), CacheFile::default());
    let held = cache.lock().await.unwrap();
    let mut f = CacheFile::default();
    f.upsert(login("http://a", "t", None));
    cache.save(&held, &f).unwrap();
    assert_eq!(mode(cache.dir()), 0o700);
    assert_eq!(mode(cache.path()), 0o600);
    assert_eq!(cache.load().unwrap(), f);

    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = cache.load().unwrap_err().to_string();
    assert!(e.contains("accessible to other users"), "{e}");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(cache.path(), b"{not json").unwrap();
    let e = cache.load().unwrap_err().to_string();
    assert!(e.contains("damaged") && e.contains("appfence login"), "{e}");
    assert!(cache.delete(&held).unwrap());
    assert!(!cache.delete(&held).unwrap());
}

/// A token endpoint that rotates refresh tokens: each is good once; a second use
/// revokes the whole sign-in, as appfence's does.
#[derive(Default)]
struct Rotating {
    live: HashSet<String>,
    used: HashSet<String>,
    issued: u32,
    refreshes: u32,
    revoked: bool,
}

type Shared = Arc<Mutex<Rotating>>;

async fn token_endpoint(State(s): State<Shared>, body: Bytes) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
    let rt = form
        .iter()
        .find(|(k, _)| k == "refresh_token")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut s = s.lock().unwrap();
    s.refreshes += 1;
    let refuse = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if s.used.contains(&rt) {
        s.revoked = true;
        return refuse(
            "The refresh token was already used; every token of this sign-in is now revoked",
        );
    }
    if s.revoked || !s.live.remove(&rt) {
        return refuse("The refresh token is not valid");
    }
    s.used.insert(rt);
    s.issued += 1;
    let next = format!("rt-{}", s.issued);
    s.live.insert(next.clone());
    axum::Json(json!({
        "token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600,
        "access_token": format!("at-{}", s.issued), "refresh_token": next,
    }))
    .into_response()
}

/// A stand-in server with `rt-0` live, and a cache holding an expired sign-in to it.
async fn stale_sign_in() -> (Shared, TokenCache, CachedLogin, tempfile::TempDir) {
    let state: Shared = Arc::new(Mutex::new(Rotating::default()));
    state.lock().unwrap().live.insert("rt-0".into());
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token_endpoint))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let tmp = tempfile::tempdir().unwrap();
    let cache = TokenCache::in_dir(tmp.path().join("appfence"));
    let mut l = login(&server, "t", Some("t-id"));
    l.token_endpoint = format!("{server}/token");
    l.expires_at = unix_now() + 30;
    let held = cache.lock().await.unwrap();
    let mut f = CacheFile::default();
    f.upsert(l.clone());
    cache.save(&held, &f).unwrap();
    (state, cache, l, tmp)
}

fn stored(cache: &TokenCache) -> Option<CachedLogin> {
    cache.load().unwrap().sessions.into_iter().next()
}

#[tokio::test]
async fn a_stale_token_is_refreshed_and_the_rotated_refresh_token_saved_at_once() {
    let (state, cache, l, _tmp) = stale_sign_in().await;
    let session = CachedSession::new(cache.clone(), &l);
    let http = reqwest::Client::new();
    assert_eq!(session.access_token(&http, None).await.unwrap(), "at-1");
    let saved = stored(&cache).unwrap();
    assert_eq!(saved.refresh_token.as_deref(), Some("rt-1"));
    assert_eq!(saved.access_token, "at-1");
    assert!(saved.has_time_left(unix_now()));
    assert_eq!(mode(cache.path()), 0o600);
    // Fresh now: no more requests.
    assert_eq!(session.access_token(&http, None).await.unwrap(), "at-1");
    assert_eq!(state.lock().unwrap().refreshes, 1);
    // A token the API refused is replaced even with time left.
    assert_eq!(
        session.access_token(&http, Some("at-1")).await.unwrap(),
        "at-2"
    );
    assert_eq!(
        stored(&cache).unwrap().refresh_token.as_deref(),
        Some("rt-2")
    );
}

#[tokio::test]
async fn processes_refreshing_at_once_present_the_refresh_token_once() {
    let (state, cache, l, _tmp) = stale_sign_in().await;
    // Separate sessions open the lock file separately, as separate processes do.
    let sessions: Vec<_> = (0..4)
        .map(|_| Arc::new(CachedSession::new(cache.clone(), &l)))
        .collect();
    let http = reqwest::Client::new();
    let tasks: Vec<_> = sessions
        .iter()
        .map(|s| {
            let (s, http) = (s.clone(), http.clone());
            tokio::spawn(async move { s.access_token(&http, None).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "at-1");
    }
    let s = state.lock().unwrap();
    assert_eq!(s.refreshes, 1, "one refresh for all");
    assert!(!s.revoked);
}

#[tokio::test]
async fn a_refused_refresh_ends_the_sign_in_with_the_servers_reason() {
    let (state, cache, l, _tmp) = stale_sign_in().await;
    state.lock().unwrap().live.clear();
    let session = CachedSession::new(cache.clone(), &l);
    let e = session
        .access_token(&reqwest::Client::new(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Session(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("your sign-in has ended: run `appfence login` again"),
        "{text}"
    );
    assert!(
        text.contains("invalid_grant: The refresh token is not valid"),
        "{text}"
    );
    assert_eq!(stored(&cache), None, "the entry is gone");
    // And it stays ended, without asking the server again.
    let e = session
        .access_token(&reqwest::Client::new(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("appfence logout"), "{e}");
    assert_eq!(state.lock().unwrap().refreshes, 1);
}
