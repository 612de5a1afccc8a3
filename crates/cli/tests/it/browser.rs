//! The server as a browser sees it: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) over WebDriver, through `appfence_testkit::browser`. Without them
//! these tests say `skipped:` (and fail under `CI=true`).

use crate::harness::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shows_health_and_the_openapi_document() {
    let Some(browser) = appfence_testkit::browser_or_skip("browser_smoke").await else {
        return;
    };
    let server = TestServer::start().await;

    browser.goto(&server.url("/healthz")).await;
    assert_eq!(browser.body_text().await.trim(), "ok");
    assert_eq!(browser.current_url().await, server.url("/healthz"));

    // Chromium shows a JSON document as its text in a <pre>.
    browser.goto(&server.url("/api/openapi.json")).await;
    let text = browser.text_of("pre").await;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the page's text is not JSON ({e}): {text}"));
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"]["/api/machines"].is_object(), "{text}");

    let shot = browser.screenshot("browser_smoke-openapi").await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", shot.display());

    browser.quit().await;
    server.stop().await;
}
