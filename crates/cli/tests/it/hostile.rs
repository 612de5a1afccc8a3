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

async fn hold_half_open(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/machines HTTP/1.1\r\nHost: appfence\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_after_the_header_timeout() {
    let server = TestServer::start_with(
        |c| {
            c.connection_limits = ConnectionLimits {
                header_read: Duration::from_secs(1),
                max_connections: 1_000,
            }
        },
        None,
    )
    .await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let healthz = || {
        let url = server.url("/healthz");
        async move {
            fresh_client()
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let mut held = hold_half_open(&addr, 50).await;
    assert_eq!(
        healthz().await.unwrap(),
        200,
        "the server answers while they are held"
    );
    for s in &mut held {
        assert!(
            until_closed(s, Duration::from_secs(10)).await.is_some(),
            "a connection that never sent its head was kept"
        );
    }
    assert_eq!(healthz().await.unwrap(), 200);

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
    assert_eq!(
        r.json()["commands"],
        serde_json::json!([]),
        "answered at its deadline: {}",
        r.text
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_a_503_envelope() {
    const CAP: usize = 20;
    let server = TestServer::start_with(
        |c| {
            c.connection_limits = ConnectionLimits {
                header_read: Duration::from_secs(60),
                max_connections: CAP,
            }
        },
        None,
    )
    .await;
    let addr = server.base.trim_start_matches("http://").to_string();
    // The cap is taken by connections that stay (their timeout is a minute away).
    let _held = hold_half_open(&addr, CAP).await;
    for _ in 0..10 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: appfence\r\n\r\n")
            .await
            .ok();
        let answer = until_closed(&mut s, Duration::from_secs(10))
            .await
            .expect("closed after the answer");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.contains("\"code\":\"ServiceUnavailable\"") && answer.contains("retry-after: 1"),
            "{answer}"
        );
    }
    drop(_held);
    within(
        Duration::from_secs(10),
        "service once they are gone",
        async {
            while fresh_client()
                .get(server.url("/healthz"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
                != Some(200)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    server.stop().await;
}
