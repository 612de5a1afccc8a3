//! Reading a token request from its form parameters and `Authorization: Basic` header:
//! client credentials (RFC 6749 §4.4) and the resource owner password grant (§4.3).
//! Pure, so every refusal is unit-tested.

use std::collections::HashMap;

use appfence_core::ids::truncate;
use appfence_proto::Secret;
use axum::http::HeaderValue;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::audience::{TokenPolicy, TokenVersion};
use super::failure::OAuthFailure;

/// A well-formed request, not yet authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant: Grant,
    pub client: ClientAuth,
    /// The requested audience in canonical form.
    pub audience: String,
}

/// What the client presents to identify itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    pub client_id: String,
    /// Always present for client credentials; optional for the password grant, whose
    /// client may be public (a script or a native app cannot keep a secret).
    pub client_secret: Option<Secret>,
    /// The client authenticated with HTTP Basic (so a failure gets a Basic challenge).
    pub basic_auth: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `grant_type=client_credentials`: the application acts as itself.
    ClientCredentials,
    /// `grant_type=password`: the application acts for this user.
    Password(UserCredentials),
}

/// `username` and `password` of a password grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCredentials {
    pub username: String,
    pub password: Secret,
}

/// The parameters of a form body and, for a GET, of the query string. A parameter given
/// twice is refused (RFC 6749 §3.2); an empty one counts as absent (§3.1).
pub fn parse_params(
    body: &[u8],
    query: Option<&str>,
) -> Result<HashMap<String, String>, OAuthFailure> {
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        OAuthFailure::invalid_request("The request body must be application/x-www-form-urlencoded")
    })?;
    if let Some(q) = query {
        let from_query: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|_| OAuthFailure::invalid_request("The query string is not valid"))?;
        pairs.extend(from_query);
    }
    let mut params = HashMap::new();
    for (name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        if params.contains_key(&name) {
            return Err(OAuthFailure::invalid_request(format!(
                "Parameter '{}' is given more than once",
                truncate(&name, 100)
            )));
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// Checks the request in the order clients fix things: grant type, client, the user's
/// credentials (password grant), then the resource (v1) or scope (v2).
pub fn token_request(
    params: &HashMap<String, String>,
    authorization: Option<&HeaderValue>,
    version: TokenVersion,
    policy: &TokenPolicy,
) -> Result<TokenRequest, OAuthFailure> {
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| OAuthFailure::missing("grant_type"))?;
    let (grant, client) = match grant_type.as_str() {
        "client_credentials" => (
            Grant::ClientCredentials,
            client_auth(params, authorization, SecretRequired::Yes)?,
        ),
        "password" => {
            let client = client_auth(params, authorization, SecretRequired::No)?;
            let user = UserCredentials {
                username: required(params, "username")?,
                password: required(params, "password")?.into(),
            };
            (Grant::Password(user), client)
        }
        other => {
            return Err(OAuthFailure::unsupported_grant_type(format!(
                "The grant type '{}' is not supported; use 'client_credentials', 'password', \
                 'authorization_code', 'refresh_token' or \
                 'urn:ietf:params:oauth:grant-type:device_code'",
                truncate(other, 100)
            )))
        }
    };
    Ok(TokenRequest {
        grant,
        client,
        audience: requested_audience(params, version, policy)?.to_string(),
    })
}

fn required(params: &HashMap<String, String>, name: &str) -> Result<String, OAuthFailure> {
    params
        .get(name)
        .cloned()
        .ok_or_else(|| OAuthFailure::missing(name))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretRequired {
    Yes,
    No,
}

/// The client's id and secret, from HTTP Basic or from the body (not both).
pub(crate) fn client_auth(
    params: &HashMap<String, String>,
    authorization: Option<&HeaderValue>,
    secret: SecretRequired,
) -> Result<ClientAuth, OAuthFailure> {
    let form_id = params.get("client_id");
    let form_secret = params.get("client_secret");
    match basic_credentials(authorization)? {
        Some((id, basic_secret)) => {
            if form_secret.is_some() {
                return Err(OAuthFailure::invalid_request(
                    "Use only one client authentication method: HTTP Basic or client_secret in the body",
                ));
            }
            if form_id.is_some_and(|f| *f != id) {
                return Err(OAuthFailure::invalid_request(
                    "The client_id in the body differs from the one in the Authorization header",
                ));
            }
            Ok(ClientAuth {
                client_id: id,
                client_secret: Some(basic_secret.into()),
                basic_auth: true,
            })
        }
        None => {
            let client_id = required(params, "client_id")?;
            let client_secret = match secret {
                SecretRequired::Yes => Some(required(params, "client_secret")?.into()),
                SecretRequired::No => form_secret.cloned().map(Secret::from),
            };
            Ok(ClientAuth {
                client_id,
                client_secret,
                basic_auth: false,
            })
        }
    }
}

/// The audience in canonical form, from `resource` (v1) or `scope` (v2, `<resource>/.default`).
fn requested_audience<'p>(
    params: &HashMap<String, String>,
    version: TokenVersion,
    policy: &'p TokenPolicy,
) -> Result<&'p str, OAuthFailure> {
    match version {
        TokenVersion::V1 => {
            let resource = params
                .get("resource")
                .ok_or_else(|| OAuthFailure::missing("resource"))?;
            policy.accept_audience(resource).ok_or_else(|| {
                OAuthFailure::invalid_resource(format!(
                    "The resource '{}' is not accepted; accepted resources are: {}",
                    truncate(resource, 200),
                    policy.audiences().join(", ")
                ))
            })
        }
        TokenVersion::V2 => {
            let scope = params
                .get("scope")
                .ok_or_else(|| OAuthFailure::missing("scope"))?;
            policy
                .audience_from_scope(scope)
                .map_err(|e| OAuthFailure::invalid_scope(e.0))
        }
    }
}

/// `Authorization: Basic base64(client_id:client_secret)` (RFC 6749 §2.3.1). Other
/// schemes are not client authentication and are ignored. The RFC form-encodes both
/// parts before base64; our client ids (GUIDs) and secrets (base64url) contain no
/// character that encoding changes, so decoding would be a no-op and is skipped.
fn basic_credentials(
    authorization: Option<&HeaderValue>,
) -> Result<Option<(String, String)>, OAuthFailure> {
    let Some(value) = authorization else {
        return Ok(None);
    };
    let malformed = || {
        OAuthFailure::invalid_client(
            "The Authorization header is not valid HTTP Basic credentials",
            true,
        )
    };
    let value = value.to_str().map_err(|_| malformed())?.trim();
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    if id.is_empty() || secret.is_empty() {
        return Err(malformed());
    }
    Ok(Some((id.to_string(), secret.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MDE: &str = "https://api.securitycenter.microsoft.com";

    fn policy() -> TokenPolicy {
        TokenPolicy::new("http://127.0.0.1:8080")
    }

    fn params(body: &str) -> HashMap<String, String> {
        parse_params(body.as_bytes(), None).unwrap()
    }

    fn v1(body: &str) -> Result<TokenRequest, OAuthFailure> {
        token_request(&params(body), None, TokenVersion::V1, &policy())
    }

    fn v2(body: &str) -> Result<TokenRequest, OAuthFailure> {
        token_request(&params(body), None, TokenVersion::V2, &policy())
    }

    fn failure(r: Result<TokenRequest, OAuthFailure>) -> (u16, &'static str, String) {
        let f = r.unwrap_err();
        (f.status.as_u16(), f.error, f.description)
    }

    #[test]
    fn v1_requests_name_a_resource() {
        let r = v1("grant_type=client_credentials&client_id=c&client_secret=s&resource=https%3A%2F%2Fapi.securitycenter.microsoft.com%2F")
            .unwrap();
        assert_eq!(
            r,
            TokenRequest {
                grant: Grant::ClientCredentials,
                client: ClientAuth {
                    client_id: "c".into(),
                    client_secret: Some("s".into()),
                    basic_auth: false
                },
                audience: MDE.into(),
            }
        );
        assert_eq!(
            failure(v1(
                "grant_type=client_credentials&client_id=c&client_secret=s"
            )),
            (
                400,
                "invalid_request",
                "Parameter 'resource' is missing".into()
            )
        );
        let (status, error, description) =
            failure(v1("grant_type=client_credentials&client_id=c&client_secret=s&resource=https://graph.microsoft.com"));
        assert_eq!((status, error), (400, "invalid_resource"));
        assert!(
            description.contains("'https://graph.microsoft.com'"),
            "{description}"
        );
    }

    #[test]
    fn v2_requests_name_a_default_scope() {
        let r = v2(&format!(
            "grant_type=client_credentials&client_id=c&client_secret=s&scope={MDE}/.default"
        ))
        .unwrap();
        assert_eq!(r.audience, MDE);
        assert_eq!(
            failure(v2(&format!(
                "grant_type=client_credentials&client_id=c&client_secret=s&resource={MDE}"
            ))),
            (
                400,
                "invalid_request",
                "Parameter 'scope' is missing".into()
            )
        );
        assert_eq!(
            failure(v2("grant_type=client_credentials&client_id=c&client_secret=s&scope=https://graph.microsoft.com/.default")).1,
            "invalid_scope"
        );
    }

    #[test]
    fn grant_type_and_credentials_are_required() {
        assert_eq!(
            failure(v1(&format!("client_id=c&client_secret=s&resource={MDE}"))),
            (
                400,
                "invalid_request",
                "Parameter 'grant_type' is missing".into()
            )
        );
        assert_eq!(
            failure(v1(&format!(
                "grant_type=jwt-bearer&client_id=c&client_secret=s&resource={MDE}"
            ))),
            (
                400,
                "unsupported_grant_type",
                "The grant type 'jwt-bearer' is not supported; use 'client_credentials', \
                 'password', 'authorization_code', 'refresh_token' or \
                 'urn:ietf:params:oauth:grant-type:device_code'"
                    .into()
            )
        );
        assert_eq!(
            failure(v1(&format!(
                "grant_type=client_credentials&client_secret=s&resource={MDE}"
            ))),
            (
                400,
                "invalid_request",
                "Parameter 'client_id' is missing".into()
            )
        );
        assert_eq!(
            failure(v1(&format!(
                "grant_type=client_credentials&client_id=c&client_secret=&resource={MDE}"
            ))),
            (
                400,
                "invalid_request",
                "Parameter 'client_secret' is missing".into()
            )
        );
    }

    #[test]
    fn parameters_come_from_the_body_and_the_query() {
        let p = parse_params(
            b"grant_type=client_credentials",
            Some("client_id=c&client_secret=s%2B1"),
        )
        .unwrap();
        assert_eq!(p["client_id"], "c");
        assert_eq!(p["client_secret"], "s+1");
        let err = parse_params(b"client_id=a", Some("client_id=b")).unwrap_err();
        assert_eq!(
            err.description,
            "Parameter 'client_id' is given more than once"
        );
        assert!(parse_params(b"", None).unwrap().is_empty());
    }

    #[test]
    fn basic_authentication_is_accepted() {
        let header =
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("c:s:with:colons")))
                .unwrap();
        let p = params(&format!("grant_type=client_credentials&resource={MDE}"));
        let r = token_request(&p, Some(&header), TokenVersion::V1, &policy()).unwrap();
        assert_eq!(
            r.client,
            ClientAuth {
                client_id: "c".into(),
                client_secret: Some("s:with:colons".into()),
                basic_auth: true
            }
        );
        // A matching client_id in the body is fine; a secret there as well is not.
        let p = params(&format!(
            "grant_type=client_credentials&client_id=c&resource={MDE}"
        ));
        assert!(token_request(&p, Some(&header), TokenVersion::V1, &policy()).is_ok());
        let p = params(&format!(
            "grant_type=client_credentials&client_id=d&resource={MDE}"
        ));
        assert_eq!(
            token_request(&p, Some(&header), TokenVersion::V1, &policy())
                .unwrap_err()
                .error,
            "invalid_request"
        );
        let p = params(&format!(
            "grant_type=client_credentials&client_secret=s&resource={MDE}"
        ));
        assert_eq!(
            token_request(&p, Some(&header), TokenVersion::V1, &policy())
                .unwrap_err()
                .error,
            "invalid_request"
        );
        // Garbage Basic credentials are a client authentication failure with a challenge.
        let p = params(&format!("grant_type=client_credentials&resource={MDE}"));
        for bad in [
            "Basic !!!",
            "Basic",
            &format!("basic {}", STANDARD.encode("no-colon")),
        ] {
            let f = token_request(
                &p,
                Some(&HeaderValue::from_str(bad).unwrap()),
                TokenVersion::V1,
                &policy(),
            )
            .unwrap_err();
            assert_eq!(
                (f.status.as_u16(), f.error, f.basic_challenge),
                (401, "invalid_client", true),
                "{bad}"
            );
        }
        // A Bearer header is not client authentication: the body is used.
        let bearer = HeaderValue::from_static("Bearer x");
        let p = params(&format!(
            "grant_type=client_credentials&client_id=c&client_secret=s&resource={MDE}"
        ));
        assert!(
            !token_request(&p, Some(&bearer), TokenVersion::V1, &policy())
                .unwrap()
                .client
                .basic_auth
        );
    }

    fn password_grant(user: &str, password: &str) -> Grant {
        Grant::Password(UserCredentials {
            username: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn password_grants_name_a_user_and_a_public_or_confidential_client() {
        // As MDE's user-context documentation shows it: v1, a resource, no client secret.
        let r = v1(&format!(
            "resource={MDE}&client_id=c&grant_type=password&username=ana%40example.com&password=p%26ss+word"
        ))
        .unwrap();
        assert_eq!(
            r,
            TokenRequest {
                grant: password_grant("ana@example.com", "p&ss word"),
                client: ClientAuth {
                    client_id: "c".into(),
                    client_secret: None,
                    basic_auth: false
                },
                audience: MDE.into(),
            }
        );
        // v2, with a scope and a client secret.
        let r = v2(&format!(
            "grant_type=password&client_id=c&client_secret=s&username=u&password=p&scope={MDE}/.default"
        ))
        .unwrap();
        assert_eq!(r.grant, password_grant("u", "p"));
        assert_eq!(
            r.client.client_secret.as_ref().map(|s| s.expose()),
            Some("s")
        );
        assert_eq!(r.audience, MDE);
        // Or with HTTP Basic client authentication.
        let header = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("c:s"))).unwrap();
        let p = params(&format!(
            "grant_type=password&username=u&password=p&resource={MDE}"
        ));
        let r = token_request(&p, Some(&header), TokenVersion::V1, &policy()).unwrap();
        assert!(r.client.basic_auth);
        assert_eq!(r.grant, password_grant("u", "p"));
    }

    #[test]
    fn password_grants_name_what_is_missing() {
        for (body, missing) in [
            (
                format!("grant_type=password&client_id=c&password=p&resource={MDE}"),
                "username",
            ),
            (
                format!("grant_type=password&client_id=c&username=u&password=&resource={MDE}"),
                "password",
            ),
            (
                format!("grant_type=password&username=u&password=p&resource={MDE}"),
                "client_id",
            ),
            (
                "grant_type=password&client_id=c&username=u&password=p".to_string(),
                "resource",
            ),
        ] {
            assert_eq!(
                failure(v1(&body)),
                (
                    400,
                    "invalid_request",
                    format!("Parameter '{missing}' is missing")
                ),
                "{body}"
            );
        }
        assert_eq!(
            failure(v2(
                "grant_type=password&client_id=c&username=u&password=p&scope=openid"
            ))
            .1,
            "invalid_scope"
        );
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let shown = format!("{:?}", password_grant("ana@example.com", "hunter2-hunter2"));
        assert!(shown.contains("ana@example.com"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
