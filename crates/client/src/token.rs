//! Client-credentials tokens, fetched once and reused until shortly before they expire.

use std::time::{Duration, Instant};

use appfence_proto::oauth::TokenResponse;

use crate::error::ClientError;

/// The audience MDE clients ask for; appfence maps it to its own API.
pub const MDE_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

#[derive(Clone)]
pub(crate) struct CachedToken {
    pub value: String,
    refresh_at: Instant,
}

impl CachedToken {
    pub fn new(value: String, expires_in: u64, now: Instant) -> Self {
        CachedToken {
            value,
            refresh_at: now
                + Duration::from_secs(expires_in.saturating_sub(refresh_margin(expires_in))),
        }
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }
}

/// Renew a minute early, so a token never expires between our check and the server's;
/// for short-lived tokens, at half their life.
fn refresh_margin(expires_in: u64) -> u64 {
    60.min(expires_in / 2)
}

pub(crate) async fn fetch(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    client_secret: &str,
) -> Result<TokenResponse, ClientError> {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("scope", MDE_SCOPE),
    ];
    let resp = http
        .post(token_url)
        .form(&form)
        .send()
        .await
        .map_err(ClientError::transport)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(ClientError::transport)?;
    if !status.is_success() {
        return Err(ClientError::from_response(status, None, &body));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ClientError::Decode(format!("unexpected token response from {token_url}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_a_minute_early_or_at_half_life() {
        let now = Instant::now();
        let t = CachedToken::new("x".into(), 3599, now);
        assert!(t.is_fresh(now + Duration::from_secs(3538)));
        assert!(!t.is_fresh(now + Duration::from_secs(3539)));
        let short = CachedToken::new("x".into(), 10, now);
        assert!(short.is_fresh(now + Duration::from_secs(4)));
        assert!(!short.is_fresh(now + Duration::from_secs(5)));
        let zero = CachedToken::new("x".into(), 0, now);
        assert!(!zero.is_fresh(now));
    }
}
