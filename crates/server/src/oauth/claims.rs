//! The parts of a presented JWT that every issuer shares: the header, the claims (all
//! optional, so a missing claim gets its own message), and how claims become a
//! [`Principal`]. A token without `scp` is an application token; one with `scp` is a
//! user (delegated) token.

use appfence_core::authz::Principal;
use appfence_core::ids::truncate;
use appfence_core::Error;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// The longest piece of a presented token quoted back in an error message.
pub(crate) const QUOTE_MAX: usize = 200;

pub(crate) fn refuse(message: impl Into<String>) -> Error {
    Error::Unauthorized(message.into())
}

#[derive(Deserialize)]
pub(crate) struct RawHeader {
    pub alg: Option<String>,
    pub kid: Option<String>,
}

/// The three dot-separated parts of a compact JWS, base64url-decoded where needed.
fn parts(token: &str) -> Result<(&str, &str), Error> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    Ok((header, payload))
}

fn malformed() -> Error {
    refuse("The token is not a well-formed JWT")
}

pub(crate) fn read_header(token: &str) -> Result<RawHeader, Error> {
    let (header, _) = parts(token)?;
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// The `iss` claim of a token whose signature is not checked yet: only to choose which
/// issuer's keys verify it. Nothing else is read before the signature is checked.
pub(crate) fn unverified_issuer(token: &str) -> Result<Option<String>, Error> {
    #[derive(Deserialize)]
    struct IssuerOnly {
        iss: Option<serde_json::Value>,
    }
    let (_, payload) = parts(token)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?;
    let claims: IssuerOnly = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    Ok(claims.iss.and_then(|v| v.as_str().map(str::to_string)))
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The claims as presented.
#[derive(Deserialize)]
pub(crate) struct PresentedClaims {
    pub aud: Option<OneOrMany>,
    pub iss: Option<String>,
    /// NumericDate (RFC 7519 §2) may be fractional.
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    pub tid: Option<String>,
    pub appid: Option<String>,
    pub azp: Option<String>,
    pub app_displayname: Option<String>,
    pub roles: Option<Vec<String>>,
    pub idtyp: Option<String>,
    /// Delegated scopes, space-separated.
    pub scp: Option<String>,
    pub oid: Option<String>,
    pub upn: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Option<Vec<String>>,
    /// ID tokens (console sign-in) only: the subject, the e-mail address and the
    /// nonce of the authentication request.
    pub sub: Option<String>,
    pub email: Option<String>,
    pub nonce: Option<String>,
}

/// A NumericDate in 100 ns ticks, comparable with the clock without rounding (a float
/// of seconds cannot resolve ticks); exact for whole seconds, saturating when absurd.
fn ticks(seconds: f64) -> i64 {
    (seconds * 10_000_000.0).floor() as i64
}

impl PresentedClaims {
    /// `exp` (required) and `nbf`, in ticks.
    pub fn validity(&self) -> Result<(i64, Option<i64>), Error> {
        let exp = self
            .exp
            .ok_or_else(|| refuse("The token has no expiry (exp)"))?;
        Ok((ticks(exp), self.nbf.map(ticks)))
    }

    /// `aud`, which may be one string or several; at least one is required.
    pub fn audiences(&self) -> Result<Vec<String>, Error> {
        let audiences = match &self.aud {
            Some(OneOrMany::One(a)) => vec![a.clone()],
            Some(OneOrMany::Many(many)) => many.clone(),
            None => Vec::new(),
        };
        if audiences.is_empty() {
            return Err(refuse("The token has no audience (aud)"));
        }
        Ok(audiences)
    }

    /// The caller, acting on `tenant_id`: a user when the token has `scp`, an
    /// application otherwise.
    pub fn into_principal(self, tenant_id: String) -> Result<Principal, Error> {
        let scopes: Vec<String> = self
            .scp
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if scopes.is_empty() {
            return self.into_application(tenant_id);
        }
        if self.idtyp.as_deref() == Some("app") {
            return Err(refuse(
                "The token says it is an application token (idtyp) but carries delegated scopes (scp)",
            ));
        }
        let object_id = self
            .oid
            .filter(|o| !o.is_empty())
            .ok_or_else(|| refuse("The user token has no object id (oid)"))?;
        let upn = self
            .upn
            .or(self.preferred_username)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| refuse("The user token has no user name (upn or preferred_username)"))?;
        Ok(Principal::user(
            tenant_id,
            object_id,
            upn,
            scopes,
            self.groups.unwrap_or_default(),
        ))
    }

    fn into_application(self, tenant_id: String) -> Result<Principal, Error> {
        if let Some(idtyp) = self.idtyp.filter(|t| t != "app") {
            return Err(refuse(format!(
                "The token's identity type '{}' is not accepted without delegated scopes (scp)",
                truncate(&idtyp, QUOTE_MAX)
            )));
        }
        let client_id = self
            .appid
            .or(self.azp)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| refuse("The token has no application id (appid)"))?;
        let display_name = self
            .app_displayname
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| client_id.clone());
        Ok(Principal::application(
            tenant_id,
            client_id,
            display_name,
            self.roles.unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_core::authz::Caller;

    fn claims(json: serde_json::Value) -> PresentedClaims {
        serde_json::from_value(json).unwrap()
    }

    fn refused(r: Result<Principal, Error>) -> String {
        match r {
            Err(Error::Unauthorized(m)) => m,
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }

    #[test]
    fn scp_makes_a_user_token() {
        let p = claims(serde_json::json!({
            "scp": "Machine.Read  Machine.RestrictExecution",
            "oid": "o-1", "preferred_username": "ana@example.com", "groups": ["g1", "g2"],
            "roles": ["Machine.Read.All"]
        }))
        .into_principal("t".into())
        .unwrap();
        assert_eq!(
            p.caller,
            Caller::User {
                object_id: "o-1".into(),
                upn: "ana@example.com".into()
            }
        );
        assert_eq!(p.scopes, ["Machine.Read", "Machine.RestrictExecution"]);
        assert_eq!(p.groups, ["g1", "g2"]);
        // A user's `roles` are app roles of the user, never application permissions.
        assert!(p.roles.is_empty());
        // `upn` wins over `preferred_username`.
        let p = claims(
            serde_json::json!({"scp": "x", "oid": "o", "upn": "u@x", "preferred_username": "p@x"}),
        )
        .into_principal("t".into())
        .unwrap();
        assert_eq!(p.requestor(), "u@x");
    }

    #[test]
    fn user_tokens_need_an_object_id_and_a_name() {
        assert_eq!(
            refused(
                claims(serde_json::json!({"scp": "x", "upn": "u@x"})).into_principal("t".into())
            ),
            "The user token has no object id (oid)"
        );
        assert_eq!(
            refused(claims(serde_json::json!({"scp": "x", "oid": "o"})).into_principal("t".into())),
            "The user token has no user name (upn or preferred_username)"
        );
        assert!(refused(
            claims(serde_json::json!({"scp": "x", "oid": "o", "upn": "u", "idtyp": "app"}))
                .into_principal("t".into())
        )
        .contains("idtyp"));
    }

    #[test]
    fn without_scp_it_is_an_application() {
        let p = claims(serde_json::json!({"azp": "client-1", "roles": ["Machine.Read.All"]}))
            .into_principal("t".into())
            .unwrap();
        assert_eq!(
            p.caller,
            Caller::Application {
                client_id: "client-1".into(),
                display_name: "client-1".into()
            }
        );
        assert_eq!(p.roles, ["Machine.Read.All"]);
        assert!(refused(
            claims(serde_json::json!({"appid": "a", "idtyp": "user"})).into_principal("t".into())
        )
        .contains("identity type"));
        // An empty scp is no scope at all.
        assert!(claims(serde_json::json!({"appid": "a", "scp": " "}))
            .into_principal("t".into())
            .is_ok());
    }

    #[test]
    fn the_issuer_can_be_read_before_verification() {
        let token = format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"iss":"https://idp.example/realms/x"}"#)
        );
        assert_eq!(
            unverified_issuer(&token).unwrap().as_deref(),
            Some("https://idp.example/realms/x")
        );
        let no_iss = format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode("{}"),
            URL_SAFE_NO_PAD.encode(r#"{"iss":5}"#)
        );
        assert_eq!(unverified_issuer(&no_iss).unwrap(), None);
        assert!(unverified_issuer("a.b").is_err());
    }
}
