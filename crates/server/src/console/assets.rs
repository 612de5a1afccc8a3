//! The console's stylesheet and script, compiled into the binary and served under a
//! name that carries a hash of their content: cached for a year, and a new build's
//! pages name new files.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    stem: &'static str,
    extension: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const FILES: [Asset; 2] = [
    Asset {
        stem: "console",
        extension: "css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/console.css"),
    },
    Asset {
        stem: "console",
        extension: "js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/console.js"),
    },
];

/// Served names (`console.<hash>.css`), in the order of [`FILES`].
static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|a| {
            let hash = hex::encode(&Sha256::digest(a.body.as_bytes())[..6]);
            format!("{}.{hash}.{}", a.stem, a.extension)
        })
        .collect()
});

pub fn stylesheet() -> String {
    format!("/console/assets/{}", NAMES[0])
}

pub fn script() -> String {
    format!("/console/assets/{}", NAMES[1])
}

pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(i) = NAMES.iter().position(|n| *n == name) else {
        return super::layout::not_found();
    };
    let asset = &FILES[i];
    let mut resp = (StatusCode::OK, asset.body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}
