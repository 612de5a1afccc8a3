//! Console sign-in through an external OpenID Connect issuer, over real HTTP: the
//! console sends the browser to the test provider (`idp.rs`), which approves at once and
//! sends it back with a code; the console redeems it (PKCE, client secret) and verifies
//! the ID token. And what is refused: a wrong state, a replayed code, an ID token with
//! another nonce, the provider's own error, a callback without the flow's cookie; and
//! failures count against the address's sign-in limit.

use appfence_server::access::{AccessSpec, ConsoleClientSpec, IssuerSpec};
use appfence_server::ServerConfig;
use serde_json::json;

use crate::console::{spec, Browser, Page};
use crate::harness::{Device, TestServer};
use crate::idp::{sign, Idp, TestKey, AUDIENCE, CONSOLE_CLIENT, CONSOLE_SECRET};

const NAME: &str = "Corp IdP";
const FLOW_COOKIE: &str = "appfence-oidc";
const SESSION_COOKIE: &str = "appfence-session";

/// The console's roles, and the IdP as the only issuer, offering console sign-in or
/// not; the IdP's group `g-analysts` is the console's Analysts role.
fn oidc_spec(idp: &Idp, console: bool) -> AccessSpec {
    let mut spec = spec();
    spec.issuers = vec![IssuerSpec {
        line: None,
        issuer: idp.issuer.clone(),
        audiences: vec![AUDIENCE.into()],
        jwks_uri: None,
        tenant: None,
        console: console.then(|| ConsoleClientSpec {
            client_id: CONSOLE_CLIENT.into(),
            client_secret: Some(CONSOLE_SECRET.into()),
            display_name: Some(NAME.into()),
            scopes: None,
        }),
    }];
    spec
}

async fn server_with(idp: &Idp, tweak: impl FnOnce(&mut ServerConfig)) -> (TestServer, Device) {
    let spec = oidc_spec(idp, true);
    let server = TestServer::start_with(
        |c| {
            c.access = spec;
            tweak(c);
        },
        None,
    )
    .await;
    let device = server.enroll("web-01.corp.local").await;
    (server, device)
}

/// The value of query parameter `name` in `url`.
fn param(url: &str, name: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// Starts a sign-in with the IdP and lets it answer; returns the answer to the start
/// and the callback path (with its query) the IdP sends the browser back to.
async fn through_idp(server: &TestServer, b: &mut Browser) -> (Page, String) {
    let start = b
        .get("/console/sign-in/external/0?next=%2Fconsole%2Factions")
        .await;
    assert_eq!(start.status, 303, "{}", start.body);
    // The IdP is another site: no console cookie goes there.
    let idp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = idp.get(start.location()).send().await.unwrap();
    assert!(
        answer.status().is_redirection(),
        "{:?}",
        answer.text().await
    );
    let back = answer.headers()["location"].to_str().unwrap().to_string();
    let path = back
        .strip_prefix(&server.base)
        .unwrap_or_else(|| panic!("the IdP sends the browser back to the console: {back}"))
        .to_string();
    (start, path)
}

fn set_cookie<'a>(page: &'a Page, name: &str) -> &'a str {
    page.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie {name}: {:?}", page.headers))
}

#[tokio::test]
async fn an_external_user_signs_in_through_the_idp_and_gets_the_role_of_their_group() {
    let idp = Idp::start(&[TestKey::RsaA]).await;
    let (server, device) = server_with(&idp, |_| {}).await;
    let mut b = Browser::new(&server.base);

    let page = b.get("/console/sign-in?next=%2Fconsole%2Factions").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!("Sign in with {NAME}"))
            && page
                .body
                .contains("href=\"/console/sign-in/external/0?next=%2Fconsole%2Factions\""),
        "{}",
        page.body
    );

    let (start, callback) = through_idp(&server, &mut b).await;
    // The authorization request, as OpenID Connect and PKCE want it.
    let to = start.location();
    assert!(
        to.starts_with(&format!("{}/protocol/openid-connect/auth?", idp.issuer)),
        "{to}"
    );
    assert_eq!(param(to, "response_type"), "code");
    assert_eq!(param(to, "client_id"), CONSOLE_CLIENT);
    assert_eq!(
        param(to, "redirect_uri"),
        format!("{}/console/sign-in/callback", server.base)
    );
    assert_eq!(param(to, "scope"), "openid profile email");
    assert_eq!(param(to, "code_challenge_method"), "S256");
    assert_eq!(param(to, "code_challenge").len(), 43);
    assert_eq!(param(to, "state").len(), 43);
    assert_eq!(param(to, "nonce").len(), 43);
    assert_ne!(param(to, "state"), param(to, "nonce"));
    let flow = set_cookie(&start, FLOW_COOKIE);
    assert!(
        flow.contains("HttpOnly")
            && flow.contains("SameSite=Lax")
            && flow.contains("Max-Age=600")
            && !flow.contains("Secure"),
        "{flow}"
    );
    assert!(
        !to.contains("code_verifier"),
        "the verifier stays with the console: {to}"
    );

    let r = b.get(&callback).await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/console/actions"),
        "{}",
        r.body
    );
    assert!(b.has_cookie(SESSION_COOKIE));
    assert!(!b.has_cookie(FLOW_COOKIE), "the flow's cookie is cleared");
    assert_eq!(idp.console.lock().unwrap().redeemed, 1);

    // Signed in as the IdP's user, with the Analysts role of their group.
    let page = b
        .get(&format!("/console/devices/{}", device.machine_id))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("erin@idp.test"), "{}", page.body);
    assert!(
        page.body.contains("Restrict app execution"),
        "{}",
        page.body
    );
    let csrf = page.hidden("csrf");
    let r = b
        .post(
            &format!("/console/devices/{}/restrict", device.machine_id),
            &[("csrf", &csrf), ("comment", "from the IdP")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let actions = server.stored_actions(&server.tenant_id).await;
    assert_eq!(actions[0].requestor, "erin@idp.test");

    // The same answer again: the flow is over in this browser.
    let r = b.get(&callback).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("no sign-in in progress"), "{}", r.body);

    // The code again, in another browser's fresh sign-in: the IdP refuses it.
    let mut other = Browser::new(&server.base);
    let (start, _) = through_idp(&server, &mut other).await;
    let state = param(start.location(), "state");
    let replay = format!(
        "/console/sign-in/callback?code={}&state={state}",
        param(&format!("{}{callback}", server.base), "code")
    );
    let r = other.get(&replay).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.body
            .contains(&format!("The sign-in with {NAME} did not complete"))
            && r.body.contains("invalid_grant: Code already used"),
        "{}",
        r.body
    );
    assert!(!other.has_cookie(SESSION_COOKIE));
    assert!(idp
        .console
        .lock()
        .unwrap()
        .refusals
        .contains(&"invalid_grant: Code already used".to_string()));

    // An ID token (audience: the console's client) is no bearer token for the API.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let id_token = sign(
        TestKey::RsaA,
        &json!({
            "iss": idp.issuer, "aud": CONSOLE_CLIENT, "exp": now + 300, "iat": now,
            "scp": "Machine.Read", "oid": "oid-erin", "preferred_username": "erin@idp.test",
            "groups": ["g-analysts"],
        }),
    );
    let r = server
        .anonymous()
        .with_token(&id_token)
        .get("/api/machines")
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("audience"), "{}", r.text);

    // The issuer no longer offers console sign-in (reload): its sessions end.
    server
        .state
        .reload_access(&oidc_spec(&idp, false))
        .await
        .unwrap();
    let r = b.get("/console/devices").await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = b.get("/console/sign-in").await;
    assert!(!page.body.contains("Sign in with"), "{}", page.body);
}

#[tokio::test]
async fn forged_or_stale_answers_open_no_session_and_count_against_the_address() {
    let idp = Idp::start(&[TestKey::RsaA]).await;
    let (server, _device) = server_with(&idp, |c| c.sign_in_throttle.address_failures = 3).await;

    // A wrong state: refused, the flow ends (its right answer no longer works either).
    let mut b = Browser::new(&server.base);
    let (_, callback) = through_idp(&server, &mut b).await;
    let state = param(&format!("{}{callback}", server.base), "state");
    let r = b.get(&callback.replace(&state, "forged-state")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains(&format!("The sign-in with {NAME} did not complete"))
            && r.body.contains("the state did not match"),
        "{}",
        r.body
    );
    assert!(!b.has_cookie(SESSION_COOKIE) && !b.has_cookie(FLOW_COOKIE));
    assert_eq!(
        idp.console.lock().unwrap().redeemed,
        0,
        "no code is redeemed for a wrong state"
    );
    let r = b.get(&callback).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!b.has_cookie(SESSION_COOKIE));

    // A callback in a browser that started nothing (login CSRF): refused.
    let mut stranger = Browser::new(&server.base);
    let r = stranger.get(&callback).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("no sign-in in progress"), "{}", r.body);
    assert!(!stranger.has_cookie(SESSION_COOKIE));
    assert!(
        !r.body.contains("\"error\""),
        "a page, not a JSON envelope: {}",
        r.body
    );

    // Three failures from this address: now even a good answer waits.
    let mut late = Browser::new(&server.base);
    let (_, callback) = through_idp(&server, &mut late).await;
    let r = late.get(&callback).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many failed sign-ins"), "{}", r.body);
    assert!(!late.has_cookie(SESSION_COOKIE));
}

#[tokio::test]
async fn a_wrong_nonce_and_the_idps_own_error_are_refused_in_words() {
    let idp = Idp::start(&[TestKey::RsaA]).await;
    let (server, _device) = server_with(&idp, |_| {}).await;

    // An ID token minted for another sign-in (another nonce).
    idp.console.lock().unwrap().nonce = Some("somebody else's nonce".into());
    let mut b = Browser::new(&server.base);
    let (_, callback) = through_idp(&server, &mut b).await;
    let r = b.get(&callback).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.body.contains("ID token was refused")
            && r.body.contains("nonce does not match this sign-in"),
        "{}",
        r.body
    );
    assert!(!b.has_cookie(SESSION_COOKIE));
    assert!(!r
        .body
        .contains(&param(&format!("{}{callback}", server.base), "code")));

    // The user declines at the IdP: said in words, nothing redeemed.
    {
        let mut c = idp.console.lock().unwrap();
        c.nonce = None;
        c.error = Some((
            "access_denied".into(),
            "The user declined to sign in".into(),
        ));
    }
    let redeemed = idp.console.lock().unwrap().redeemed;
    let (_, callback) = through_idp(&server, &mut b).await;
    let r = b.get(&callback).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.body.contains(&format!(
            "The sign-in with {NAME} did not complete: the identity provider answered \
             access_denied: The user declined to sign in."
        )),
        "{}",
        r.body
    );
    assert!(!b.has_cookie(SESSION_COOKIE));
    assert_eq!(idp.console.lock().unwrap().redeemed, redeemed);

    // Without the error, the same browser signs in.
    idp.console.lock().unwrap().error = None;
    let (_, callback) = through_idp(&server, &mut b).await;
    let r = b.get(&callback).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(b.has_cookie(SESSION_COOKIE));
}
