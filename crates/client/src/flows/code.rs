//! The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636): the URL the
//! person's browser opens, and the code's redemption at the token endpoint.

use super::{post_token_form, user_scope, Pkce, UserTokens};
use crate::encode;
use crate::error::ClientError;

/// What an authorization request carries.
#[derive(Debug)]
pub struct AuthorizeRequest<'a> {
    pub authorization_endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub pkce: &'a Pkce,
}

/// The URL to open in the person's browser: `response_type=code`, the scope of
/// [`user_scope`], the state and the S256 challenge.
pub fn authorize_url(req: &AuthorizeRequest<'_>) -> String {
    let scope = user_scope();
    let pairs = [
        ("client_id", req.client_id),
        ("response_type", "code"),
        ("redirect_uri", req.redirect_uri),
        ("scope", scope.as_str()),
        ("state", req.state),
        ("code_challenge", req.pkce.challenge.as_str()),
        ("code_challenge_method", req.pkce.method()),
    ];
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode::encode(v)))
        .collect();
    let sep = if req.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{}{sep}{}", req.authorization_endpoint, query.join("&"))
}

/// Redeems a code for tokens, proving with the verifier that this client asked for it.
pub async fn redeem_code(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    code: &str,
    redirect_uri: &str,
    pkce: &Pkce,
) -> Result<UserTokens, ClientError> {
    post_token_form(
        http,
        token_url,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorize_url_carries_the_challenge_never_the_verifier() {
        let pkce = Pkce::new();
        let url = authorize_url(&AuthorizeRequest {
            authorization_endpoint: "http://127.0.0.1:8080/t/oauth2/v2.0/authorize",
            client_id: "c-1",
            redirect_uri: "http://127.0.0.1:5000/callback",
            state: "s t",
            pkce: &pkce,
        });
        assert!(url.starts_with("http://127.0.0.1:8080/t/oauth2/v2.0/authorize?client_id=c-1&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2Fcallback&scope=https%3A%2F%2Fapi.securitycenter.microsoft.com%2F.default%20offline_access&state=s%20t&"), "{url}");
        assert!(url.contains(&format!("code_challenge={}", pkce.challenge)));
        assert!(url.ends_with("code_challenge_method=S256"));
        assert!(!url.contains(&pkce.verifier));
    }
}
