//! The built-in authorization server over HTTP (v1, v1 as GET, v2, discovery, JWKS) and
//! every way an API call's token can be refused.

use std::sync::Arc;
use std::time::Duration;

use appfence_core::ManualClock;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{json, Value};

use crate::harness::{TestServer, ALL_ROLES, MDE_AUDIENCE, ROLE_READ};
use crate::wire::Resp;

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

async fn token_call(req: reqwest::RequestBuilder) -> (u16, Value, Resp) {
    let r = Resp::read(req.send().await.expect("token request")).await;
    let v: Value = serde_json::from_str(&r.text).unwrap_or_else(|e| panic!("{e}: {}", r.text));
    (r.status, v, r)
}

fn assert_token_response(v: &Value, raw: &Resp) -> String {
    assert_eq!(v["token_type"], "Bearer", "{v}");
    assert!(
        v["expires_in"].is_u64(),
        "expires_in is a JSON number: {}",
        raw.text
    );
    assert_eq!(v["expires_in"], 3599);
    assert!(v["ext_expires_in"].is_u64());
    assert!(raw.text.contains(r#""expires_in":3599"#), "{}", raw.text);
    assert!(
        raw.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        raw.headers
    );
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoints_discovery_and_jwks() {
    let server = TestServer::start().await;
    let app = server.app(ALL_ROLES).await;
    let public = server.state.public_url();
    let tenant = &app.tenant_id;
    let v1_url = server.url(&format!("/{tenant}/oauth2/token"));
    let v2_url = server.url(&format!("/{tenant}/oauth2/v2.0/token"));
    let v1_form = [
        ("grant_type", "client_credentials"),
        ("client_id", app.client_id.as_str()),
        ("client_secret", app.secret.as_str()),
        ("resource", MDE_AUDIENCE),
    ];
    let v1_body = url_pairs(&v1_form);

    // v1 as a form POST.
    let (s, v, raw) = token_call(server.http.post(&v1_url).form(&v1_form)).await;
    assert_eq!(s, 200, "{v}");
    let t1 = assert_token_response(&v, &raw);
    let c1 = claims_of(&t1);
    assert_eq!(c1["aud"], MDE_AUDIENCE);
    assert_eq!(c1["iss"], format!("{public}/{tenant}/"));
    assert_eq!(c1["ver"], "1.0");
    assert_eq!(c1["tid"], tenant.as_str());
    assert_eq!(c1["appid"], app.client_id.as_str());
    assert_eq!(c1["app_displayname"], app.display_name.as_str());
    assert_eq!(c1["roles"], json!(ALL_ROLES));
    assert_eq!(
        c1["exp"].as_i64().unwrap() - c1["iat"].as_i64().unwrap(),
        3599
    );

    // v1 as a GET with a form body (some clients do this).
    let (s, v, raw) = token_call(
        server
            .http
            .get(&v1_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(v1_body.clone()),
    )
    .await;
    assert_eq!(s, 200, "GET with a form body: {v}");
    let t1_get = assert_token_response(&v, &raw);
    assert_eq!(claims_of(&t1_get)["ver"], "1.0");

    // v1 naming the server's own URL as the resource.
    let own = [
        ("grant_type", "client_credentials"),
        ("client_id", app.client_id.as_str()),
        ("client_secret", app.secret.as_str()),
        ("resource", public.as_str()),
    ];
    let (s, v, _) = token_call(server.http.post(&v1_url).form(&own)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        claims_of(v["access_token"].as_str().unwrap())["aud"],
        public.as_str()
    );

    // v2.
    let scope = format!("{}/.default", "https://api.security.microsoft.com");
    let v2_form = [
        ("grant_type", "client_credentials"),
        ("client_id", app.client_id.as_str()),
        ("client_secret", app.secret.as_str()),
        ("scope", scope.as_str()),
    ];
    let (s, v, raw) = token_call(server.http.post(&v2_url).form(&v2_form)).await;
    assert_eq!(s, 200, "{v}");
    let t2 = assert_token_response(&v, &raw);
    let c2 = claims_of(&t2);
    assert_eq!(c2["aud"], "https://api.security.microsoft.com");
    assert_eq!(c2["iss"], format!("{public}/{tenant}/v2.0"));
    assert_eq!(c2["ver"], "2.0");
    assert_eq!(c2["azp"], app.client_id.as_str());

    // Every token works on the API.
    let anon = server.anonymous();
    for t in [&t1, &t1_get, &t2] {
        let r = anon.with_token(t).get("/api/machines").await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // Wrong secret: 401 invalid_client (OAuth body, not the MDE one); unknown client:
    // 400 unauthorized_client, as Entra answers (AADSTS7000215, AADSTS700016).
    for (id, secret, status, error, code) in [
        (
            app.client_id.as_str(),
            "wrong-secret",
            401,
            "invalid_client",
            7000215,
        ),
        (
            "00000000-0000-0000-0000-000000000000",
            app.secret.as_str(),
            400,
            "unauthorized_client",
            700016,
        ),
    ] {
        for url in [&v1_url, &v2_url] {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
                ("resource", MDE_AUDIENCE),
                ("scope", &format!("{MDE_AUDIENCE}/.default")),
            ];
            let (s, v, _) = token_call(server.http.post(url.as_str()).form(&form)).await;
            assert_eq!(s, status, "{v}");
            assert_eq!(v["error"], error, "{v}");
            assert_eq!(v["error_codes"], serde_json::json!([code]), "{v}");
            assert!(v["error_description"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("AADSTS{code}: "))));
            assert!(v.get("access_token").is_none());
        }
    }
    // Other refusals: an unknown resource, a missing grant type, an unknown tenant.
    let bad_resource = [
        ("grant_type", "client_credentials"),
        ("client_id", app.client_id.as_str()),
        ("client_secret", app.secret.as_str()),
        ("resource", "https://graph.microsoft.com"),
    ];
    let (s, v, _) = token_call(server.http.post(&v1_url).form(&bad_resource)).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].is_string() && v.get("access_token").is_none(),
        "{v}"
    );
    let (s, v, _) = token_call(server.http.post(&v1_url).form(&v1_form[1..])).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (s, v, _) = token_call(
        server
            .http
            .post(server.url("/11111111-2222-3333-4444-555555555555/oauth2/token"))
            .form(&v1_form),
    )
    .await;
    assert!(matches!(s, 400 | 404), "{s} {v}");
    assert_eq!(v["error"], "invalid_request");

    // Discovery and JWKS; the JWKS key verifies our token.
    let conf: Value = server
        .http
        .get(server.url(&format!("/{tenant}/v2.0/.well-known/openid-configuration")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conf["issuer"], format!("{public}/{tenant}/v2.0"));
    assert_eq!(
        conf["token_endpoint"],
        format!("{public}/{tenant}/oauth2/v2.0/token")
    );
    let jwks_uri = conf["jwks_uri"].as_str().expect("jwks_uri").to_string();
    assert!(jwks_uri.starts_with(&public), "{jwks_uri}");
    let conf1: Value = server
        .http
        .get(server.url(&format!("/{tenant}/.well-known/openid-configuration")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conf1["issuer"], format!("{public}/{tenant}/"));
    for uri in [jwks_uri.clone(), server.url("/discovery/keys")] {
        let jwks: Value = server
            .http
            .get(&uri)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "OKP", "{jwks}");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"], header_of(&t2)["kid"]);
        let dk = DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
        let mut val = Validation::new(Algorithm::EdDSA);
        val.set_audience(&["https://api.security.microsoft.com"]);
        let decoded =
            jsonwebtoken::decode::<Value>(&t2, &dk, &val).expect("JWKS verifies the token");
        assert_eq!(decoded.claims["tid"], tenant.as_str());
        assert!(
            jwks.get("d").is_none() && !jwks.to_string().contains("\"d\""),
            "no private part"
        );
    }
    server.stop().await;
}

fn url_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// application/x-www-form-urlencoded encoding of one value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Signs arbitrary claims with the server's signing key (opened from the store with
/// the server's key file, as the server does).
async fn mint(server: &TestServer, claims: &Value) -> String {
    let keys = server.state.keys.current();
    let (kid, key) = keys.signer(server.state.clock.now()).expect("a key signs");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_with_bad_tokens_are_refused_with_reasons() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    let app = server.app(ALL_ROLES).await;
    let good = server.token(&app).await;
    let anon = server.anonymous();
    let dev = server.enroll("token-host").await;
    let path = "/api/machines";
    assert_eq!(anon.with_token(&good).get(path).await.status, 200);

    // Our own re-signing reproduces a valid token: the minting below is sound.
    let claims = claims_of(&good);
    let resigned = mint(&server, &claims).await;
    assert_eq!(anon.with_token(&resigned).get(path).await.status, 200);

    let mut messages = Vec::new();
    let mut refuse = |r: Resp, needle: &str| {
        let e = r.assert_error(401, "Unauthorized");
        assert!(
            e.message.to_lowercase().contains(needle),
            "expected '{needle}' in: {}",
            e.message
        );
        messages.push(e.message);
    };

    // No token; not Bearer; empty; malformed.
    refuse(anon.get(path).await, "missing");
    let basic = anon
        .send(
            anon.request(reqwest::Method::GET, path)
                .header("Authorization", "Basic dXNlcjpwdw=="),
        )
        .await;
    refuse(basic, "bearer");
    refuse(anon.with_token("not.a.jwt").get(path).await, "well-formed");
    refuse(anon.with_token("abc").get(path).await, "well-formed");

    // Bad signature: one character changed in the middle of the signature.
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    parts[2] = sig.into_iter().collect();
    refuse(
        anon.with_token(&parts.join(".")).get(path).await,
        "signature",
    );
    // A payload changed under the original signature (roles escalated).
    let mut escalated = claims.clone();
    escalated["roles"] = json!(["Machine.RestrictExecution", "Machine.ReadWrite.All"]);
    let forged = format!(
        "{}.{}.{}",
        good.split('.').next().unwrap(),
        URL_SAFE_NO_PAD.encode(escalated.to_string()),
        good.split('.').nth(2).unwrap()
    );
    refuse(anon.with_token(&forged).get(path).await, "signature");
    // `alg: none`.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    refuse(anon.with_token(&none).get(path).await, "");

    // Wrong audience, wrong issuer, unknown tenant: signed with the real key.
    let mut c = claims.clone();
    c["aud"] = json!("https://graph.microsoft.com");
    refuse(
        anon.with_token(&mint(&server, &c).await).get(path).await,
        "audience",
    );
    let mut c = claims.clone();
    c["iss"] = json!(format!("https://sts.windows.net/{}/", app.tenant_id));
    refuse(
        anon.with_token(&mint(&server, &c).await).get(path).await,
        "issuer",
    );
    let mut c = claims.clone();
    let ghost = uuid::Uuid::new_v4().to_string();
    c["tid"] = json!(ghost);
    c["iss"] = json!(format!("{}/{ghost}/v2.0", server.state.public_url()));
    refuse(
        anon.with_token(&mint(&server, &c).await).get(path).await,
        "tenant",
    );
    // Not valid yet.
    let mut c = claims.clone();
    c["nbf"] = json!(claims["iat"].as_i64().unwrap() + 600);
    refuse(
        anon.with_token(&mint(&server, &c).await).get(path).await,
        "not valid yet",
    );

    // Expired: the injected clock moves past `exp`.
    let exp = claims["exp"].as_i64().unwrap();
    clock.set(appfence_proto::Timestamp::from_unix_seconds(exp));
    refuse(anon.with_token(&good).get(path).await, "expired");
    clock.advance(Duration::from_secs(3600));
    refuse(anon.with_token(&good).get(path).await, "expired");
    // A token issued on the moved clock is fine.
    let fresh = server.token(&app).await;
    assert_eq!(anon.with_token(&fresh).get(path).await.status, 200);
    // Each kind of refusal says what is wrong, in its own words.
    assert_eq!(messages.len(), 13);
    let distinct: std::collections::HashSet<&String> = messages.iter().collect();
    assert!(distinct.len() >= 10, "{messages:#?}");

    // Valid token, missing role: 403 with MDE's message, nothing created.
    let reader = server.app_in(&app.tenant_id, "reader", &[ROLE_READ]).await;
    let no_roles = server.app_in(&app.tenant_id, "nobody", &[]).await;
    for a in [&reader, &no_roles] {
        let api = server.api_for(a).await;
        let e = api
            .restrict(&dev.machine_id, "x")
            .await
            .assert_error(403, "Forbidden");
        assert_eq!(
            e.message,
            "Missing application roles. API required roles: Machine.RestrictExecution"
        );
    }
    let nobody = server.api_for(&no_roles).await;
    let e = nobody
        .get("/api/machines")
        .await
        .assert_error(403, "Forbidden");
    assert!(e.message.contains("Machine.Read.All"), "{}", e.message);
    assert!(server.stored_actions(&app.tenant_id).await.is_empty());
    server.stop().await;
}
