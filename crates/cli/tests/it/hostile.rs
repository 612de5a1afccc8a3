//! Hostile connections, at a small scale: connections that never finish their request
//! head are closed after the header-read timeout, connections over the cap get a 503
//! envelope and are closed, the server answers throughout, and a long-poll that waits
//! longer than the header timeout is not cut.

use std::time::Duration;

use appfence_server::connections::ConnectionLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{within, TestServer};
use crate::wire::Resp;

const CAP: usize = 60;

/// What the server sends before closing, read until it closes (at most `limit`).
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut got)).await {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

fn fresh_client() -> reqwest::Client {
    // No pooled connection left behind to occupy a slot.
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_time_out_and_the_cap_refuses_cleanly() {
    let server = TestServer::start_with(
        |c| {
            c.connection_limits = ConnectionLimits {
                header_read: Duration::from_secs(1),
                max_connections: CAP,
            }
        },
        None,
    )
    .await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let healthz = || {
        let url = server.url("/healthz");
        async move { fresh_client().get(url).send().await.map(|r| r.status().as_u16()) }
    };

    // 50 connections that never finish their request head.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /api/machines HTTP/1.1\r\nHost: appfence\r\n").await.unwrap();
        held.push(s);
    }
    assert_eq!(healthz().await.unwrap(), 200, "the server answers while they are held");

    // Over the cap: a 503 envelope, then the connection is closed.
    let mut extra = Vec::new();
    for _ in 0..(CAP + 10 - held.len()) {
        extra.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut refused = 0;
    for s in &mut extra {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: appfence\r\n\r\n").await.ok();
        if let Some(answer) = until_closed(s, Duration::from_millis(300)).await {
            if answer.starts_with("HTTP/1.1 503") {
                assert!(answer.contains("\"code\":\"ServiceUnavailable\"") && answer.contains("retry-after: 1"), "{answer}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 10, "connections over the cap of {CAP} are refused ({refused})");

    // Each half-open connection is closed by the server after the header timeout.
    for s in &mut held {
        assert!(
            until_closed(s, Duration::from_secs(10)).await.is_some(),
            "a connection that never sent its head was kept"
        );
    }
    drop(extra);
    // Their slots are free again.
    within(Duration::from_secs(10), "service after the half-open connections", async {
        while healthz().await.ok() != Some(200) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // A long-poll longer than the header timeout is answered at its own deadline.
    let device = server.enroll("patient.corp.example").await;
    let r = Resp::read(
        fresh_client()
            .get(server.url("/agent/v1/commands?waitSeconds=3"))
            .bearer_auth(&device.credential)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["commands"], serde_json::json!([]), "answered at its deadline: {}", r.text);
    server.stop().await;
}
