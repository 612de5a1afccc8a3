//! Spec §8: per caller and per API, 100 calls a minute and 1,500 an hour; past that 429
//! `TooManyRequests` with an integer `Retry-After` and the IETF RateLimit headers.
//! Windows are measured on an injected manual clock, so the test is exact.

use std::sync::Arc;
use std::time::Duration;

use appfence_core::ratelimit::RateLimitPolicy;
use appfence_core::{Clock, ManualClock, SystemClock};
use appfence_proto::Timestamp;

use crate::harness::{Api, TestServer, ALL_ROLES};
use crate::wire::Resp;

/// The start of the current hour plus `offset`, on the wall clock's scale.
fn hour_start_plus(offset: Duration) -> Timestamp {
    let now = SystemClock.now().unix_seconds();
    Timestamp::from_unix_seconds(now - now.rem_euclid(3600)).plus(offset)
}

fn retry_after(r: &Resp) -> u64 {
    r.header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers))
        .parse()
        .expect("Retry-After is a whole number of seconds")
}

async fn calls_ok(api: &Api, path: &str, n: usize) {
    for i in 0..n {
        let r = api.get(path).await;
        assert_eq!(r.status, 200, "call {i} to {path}: {}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mde_default_limits_per_caller_and_api() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    // Tokens are issued on the moved clock, so they are valid at the times used below.
    clock.set(hour_start_plus(Duration::from_secs(1)));
    let a = server.api(ALL_ROLES).await;
    let b = server.api(ALL_ROLES).await;

    // The first call carries the policy and what remains of the tightest window.
    let first = a.get("/api/machines").await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some(r#""minute";q=100;w=60, "hour";q=1500;w=3600"#)
    );
    assert_eq!(first.header("ratelimit"), Some(r#""minute";r=99;t=59"#));
    calls_ok(&a, "/api/machines", 99).await;

    // The 101st call of the minute: 429, MDE's message, Retry-After until the minute ends.
    let refused = a.get("/api/machines").await;
    let e = refused.assert_error(429, "TooManyRequests");
    assert_eq!(
        e.message,
        "API calls quota exceeded! maximum allowed 100 per 00:01:00"
    );
    assert_eq!(retry_after(&refused), 59);
    assert_eq!(refused.header("ratelimit"), Some(r#""minute";r=0;t=59"#));
    // The versioned prefix is the same API; a refused call is not counted, and a second
    // refusal says the same.
    a.get("/api/v1.0/machines")
        .await
        .assert_error(429, "TooManyRequests");
    a.get("/api/machines?$top=1")
        .await
        .assert_error(429, "TooManyRequests");

    // Per API: the same caller may still list actions; per caller: another app may
    // still list machines. A bad token is 401, not 429.
    calls_ok(&a, "/api/machineactions", 1).await;
    calls_ok(&b, "/api/machines", 1).await;
    server
        .anonymous()
        .with_token("x.y.z")
        .get("/api/machines")
        .await
        .assert_error(401, "Unauthorized");

    // The next minute admits again.
    clock.set(hour_start_plus(Duration::from_secs(60)));
    let again = a.get("/api/machines").await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.header("ratelimit"), Some(r#""minute";r=99;t=60"#));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hour_window_holds_across_minutes() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with(
        |c| {
            c.rate_limits = RateLimitPolicy {
                per_minute: 5,
                per_hour: 8,
            }
        },
        Some(clock.clone()),
    )
    .await;
    let app = server.app(ALL_ROLES).await;
    let dev = server.enroll("limited").await;
    let path = format!("/api/machines/{}", dev.machine_id);
    clock.set(hour_start_plus(Duration::from_secs(1)));
    let a = server.api_for(&app).await;
    calls_ok(&a, &path, 5).await;
    let e = a.get(&path).await.assert_error(429, "TooManyRequests");
    assert_eq!(
        e.message,
        "API calls quota exceeded! maximum allowed 5 per 00:01:00"
    );

    clock.set(hour_start_plus(Duration::from_secs(61)));
    calls_ok(&a, &path, 3).await;
    let refused = a.get(&path).await;
    let e = refused.assert_error(429, "TooManyRequests");
    assert_eq!(
        e.message,
        "API calls quota exceeded! maximum allowed 8 per 01:00:00"
    );
    assert_eq!(retry_after(&refused), 3600 - 61);

    // Restrict has its own bucket, and refused restricts create nothing.
    let r = a.restrict(&dev.machine_id, "x").await;
    assert_eq!(r.status, 201, "{}", r.text);
    for _ in 0..4 {
        a.restrict(&dev.machine_id, "x")
            .await
            .assert_error(400, "ActiveRequestAlreadyExists");
    }
    a.restrict(&dev.machine_id, "x")
        .await
        .assert_error(429, "TooManyRequests");
    assert_eq!(server.stored_actions(&server.tenant_id).await.len(), 1);

    // A new hour: admitted again (with a token of that hour: the old one just expired).
    clock.set(hour_start_plus(Duration::from_secs(3600)));
    let a = server.api_for(&app).await;
    calls_ok(&a, &path, 1).await;
    server.stop().await;
}

/// Offboard has MDE's limits, 100 calls a minute and 1,500 an hour, in a bucket of its
/// own: a caller that spent its offboard quota may still restrict, and another caller
/// may still offboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboard_has_the_mde_limits_in_a_bucket_of_its_own() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    clock.set(hour_start_plus(Duration::from_secs(1)));
    let roles = [
        "Machine.Offboard",
        "Machine.RestrictExecution",
        "Machine.Read.All",
    ];
    let a = server.api(&roles).await;
    let b = server.api(&roles).await;
    let dev = server.enroll("leaving").await;
    let other = server.enroll("staying").await;
    let offboard = |api: &Api, machine: &str| {
        let api = api.clone();
        let path = format!("/api/machines/{machine}/offboard");
        async move {
            api.post(&path, &serde_json::json!({"Comment": "limits"}))
                .await
        }
    };
    // One created, 99 refused as duplicates: each counts.
    let first = offboard(&a, &dev.machine_id).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("ratelimit"), Some(r#""minute";r=99;t=59"#));
    for i in 0..99 {
        let r = offboard(&a, &dev.machine_id).await;
        assert_eq!(r.status, 400, "call {i}: {}", r.text);
    }
    let refused = offboard(&a, &dev.machine_id).await;
    let e = refused.assert_error(429, "TooManyRequests");
    assert_eq!(
        e.message,
        "API calls quota exceeded! maximum allowed 100 per 00:01:00"
    );
    assert_eq!(retry_after(&refused), 59);
    // Other APIs and other callers are counted apart.
    let r = a.restrict(&other.machine_id, "still allowed").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = offboard(&b, &other.machine_id).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(server.stored_actions(&server.tenant_id).await.len(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_have_mde_s_thirty_a_minute() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    clock.set(hour_start_plus(Duration::from_secs(1)));
    let api = server.api(&["Ti.ReadWrite.All"]).await;
    let import = |n: usize| {
        serde_json::json!({"Indicators": [{
            "indicatorValue": format!("{n:064x}"),
            "indicatorType": "FileSha256",
            "action": "Allowed",
            "title": "tool",
            "description": "limits",
        }]})
    };
    for n in 0..30 {
        let r = api.post("/api/indicators/import", &import(n)).await;
        assert_eq!(r.status, 200, "import {n}: {}", r.text);
        assert!(r
            .header("ratelimit-policy")
            .unwrap()
            .starts_with("\"minute\";q=30;w=60, \"hour\";q=1500"));
    }
    let refused = api.post("/api/indicators/import", &import(30)).await;
    let e = refused.assert_error(429, "TooManyRequests");
    assert_eq!(
        e.message,
        "API calls quota exceeded! maximum allowed 30 per 00:01:00"
    );
    // Submitting one indicator keeps MDE's usual 100.
    let r = api
        .post("/api/indicators", &import(31)["Indicators"][0])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r
        .header("ratelimit-policy")
        .unwrap()
        .starts_with("\"minute\";q=100;"));
    // The next minute takes imports again.
    clock.advance(Duration::from_secs(60));
    let r = api.post("/api/indicators/import", &import(32)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    server.stop().await;
}
