//! Who an access token names, read from its payload without verifying it: only to say
//! who signed in and to file the tokens under the right tenant. The server verifies
//! tokens; the client only carries them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The user and tenant a token names, when it says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenIdentity {
    /// `upn`, else `preferred_username`, else `unique_name`, else `email`.
    pub user: Option<String>,
    /// `tid`.
    pub tenant_id: Option<String>,
}

/// The identity in a JWT's payload; empty if the token is not a JWT.
pub fn identity(access_token: &str) -> TokenIdentity {
    let claims = access_token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let Some(claims) = claims else {
        return TokenIdentity::default();
    };
    let text = |name: &str| {
        claims[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    TokenIdentity {
        user: ["upn", "preferred_username", "unique_name", "email"]
            .iter()
            .find_map(|name| text(name)),
        tenant_id: text("tid"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "eyJhbGciOiJFZERTQSJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(claims.as_bytes())
        )
    }

    #[test]
    fn reads_the_user_and_tenant() {
        let t = jwt(r#"{"upn":"ana@corp.example","preferred_username":"x","tid":"t-1"}"#);
        assert_eq!(
            identity(&t),
            TokenIdentity {
                user: Some("ana@corp.example".into()),
                tenant_id: Some("t-1".into()),
            }
        );
        let t = jwt(r#"{"preferred_username":"bo@corp.example"}"#);
        assert_eq!(identity(&t).user.as_deref(), Some("bo@corp.example"));
        assert_eq!(identity("opaque").user, None);
        assert_eq!(identity("a.!!!.c"), TokenIdentity::default());
    }
}
