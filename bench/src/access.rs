//! Measurement 3: the API gate (token validation, rate limiting, authorization) per
//! request, as a share of a `GET /api/machineactions/{id}` measured in the same run.
//!
//! The gate's work is called in-process, exactly as the request path calls it: the
//! guard's `api_of`, `authenticate`, `RateLimiter::acquire` and the two rate-limit
//! header values, then the handler's `AppState::authorize` and the device-group check.
//! It is measured for two callers, each against an HTTP GET made with the same token:
//!
//! - an application token of the built-in issuer (client credentials, EdDSA);
//! - a delegated user token of an external issuer (RS256, `scp`, `groups`, a role and
//!   a device group), verified with keys fetched from a JWKS served on loopback.
//!
//! Both are cached after their first verification, as on a server in use. Alongside,
//! informative: a token's first sight (verification cache cleared before every call),
//! and the user's device check as the handler makes it, with its store lookup of the
//! machine. The HTTP GETs run on one client, so a request's time is its latency and the
//! share is per request. All kinds run in timed rounds whose order rotates.

use std::sync::Arc;
use std::time::Duration;

use appfence_core::records::{ActionRecord, MachineRecord};
use appfence_core::MachineRef;
use appfence_server::api::guard::api_of;
use appfence_server::oauth::extract::authenticate;
use appfence_server::ratelimit::RateKey;
use appfence_server::AppState;
use appfence_store::Store;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, Method};

use crate::load;
use crate::reads::expect_ok;
use crate::setup::Harness;
use crate::stats::Sample;

/// The route the gate sees for `GET /api/machineactions/{id}`.
const GET_ACTION_ROUTE: &str = "/api/machineactions/{id}";

#[derive(Default)]
pub struct Access {
    /// `GET /api/machineactions/{id}`, one client, application token.
    pub get_app: Sample,
    /// The same with the user token.
    pub get_user: Sample,
    /// The gate for the application token, cached.
    pub gate_app: Sample,
    /// The gate for the user token, cached, device check on the machine record.
    pub gate_user: Sample,
    /// As `gate_user`, with the device check as the handler makes it (the store lookup
    /// of the action's machine included).
    pub gate_user_lookup: Sample,
    /// The gate for the application token on its first sight (EdDSA verification).
    pub first_app: Sample,
    /// The gate for the user token on its first sight (RS256 verification).
    pub first_user: Sample,
}

#[derive(Clone, Copy)]
enum Kind {
    GetApp,
    GetUser,
    GateApp,
    GateUser,
    GateUserLookup,
    FirstApp,
    FirstUser,
}

pub const KINDS: usize = 7;
const ORDER: [Kind; KINDS] = [
    Kind::GetApp,
    Kind::GetUser,
    Kind::GateApp,
    Kind::GateUser,
    Kind::GateUserLookup,
    Kind::FirstApp,
    Kind::FirstUser,
];

/// An action and the machine it is about, read before anything is timed.
struct Target {
    action: ActionRecord,
    machine: MachineRecord,
}

/// How the gate learns whether the user may see the device.
#[derive(Clone, Copy)]
enum DeviceCheck {
    /// `DeviceScope::check_device` on the machine record in hand.
    Record,
    /// `AppState::check_action_device`: the handler's store lookup, then the check.
    Lookup,
}

/// Checks once that both tokens read an action over HTTP, then measures `rounds` rounds
/// of `round` per kind. `user_authorization` is `Bearer <user token>`.
pub async fn run(
    h: &Harness,
    user_authorization: &str,
    action_ids: &[String],
    rounds: usize,
    round: Duration,
) -> Result<Access, String> {
    let ids: Arc<Vec<String>> = Arc::new(action_ids.to_vec());
    let targets = Arc::new(targets(h, &ids).await?);
    let app = Caller::new(&h.authorization)?;
    let user = Caller::new(user_authorization)?;
    // The first calls fetch the issuer's keys and fill the verification cache.
    for caller in [&app, &user] {
        get_actions(h, caller, ids.clone(), Duration::from_millis(50)).await?;
        let state = h.server.state.clone();
        pass_gate(&state, &caller.headers, &targets[0], DeviceCheck::Record).await?;
    }
    let mut out = Access::default();
    for r in 0..rounds.max(1) {
        for k in 0..KINDS {
            let kind = ORDER[(r + k) % KINDS];
            let (slot, sample) = match kind {
                Kind::GetApp => (
                    &mut out.get_app,
                    get_actions(h, &app, ids.clone(), round).await?,
                ),
                Kind::GetUser => (
                    &mut out.get_user,
                    get_actions(h, &user, ids.clone(), round).await?,
                ),
                Kind::GateApp => (
                    &mut out.gate_app,
                    gates(h, &app, &targets, DeviceCheck::Record, false, round).await?,
                ),
                Kind::GateUser => (
                    &mut out.gate_user,
                    gates(h, &user, &targets, DeviceCheck::Record, false, round).await?,
                ),
                Kind::GateUserLookup => (
                    &mut out.gate_user_lookup,
                    gates(h, &user, &targets, DeviceCheck::Lookup, false, round).await?,
                ),
                Kind::FirstApp => (
                    &mut out.first_app,
                    gates(h, &app, &targets, DeviceCheck::Record, true, round).await?,
                ),
                Kind::FirstUser => (
                    &mut out.first_user,
                    gates(h, &user, &targets, DeviceCheck::Record, true, round).await?,
                ),
            };
            slot.merge(sample);
        }
    }
    Ok(out)
}

/// One caller's `Authorization` header, for reqwest and for the in-process gate.
struct Caller {
    authorization: Arc<str>,
    headers: Arc<HeaderMap>,
}

impl Caller {
    fn new(authorization: &str) -> Result<Caller, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(authorization)
                .map_err(|e| format!("authorization header: {e}"))?,
        );
        Ok(Caller {
            authorization: authorization.into(),
            headers: Arc::new(headers),
        })
    }
}

async fn targets(h: &Harness, ids: &[String]) -> Result<Vec<Target>, String> {
    let tenant = &h.tenant.id;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let action = h
            .store
            .action(tenant, id)
            .await
            .map_err(|e| format!("Store::action: {e}"))?
            .ok_or_else(|| format!("action {id} not found"))?;
        let machine = h
            .store
            .machine(tenant, &MachineRef::Id(action.machine_id.clone()))
            .await
            .map_err(|e| format!("Store::machine: {e}"))?
            .ok_or_else(|| format!("machine {} not found", action.machine_id))?;
        out.push(Target { action, machine });
    }
    if out.is_empty() {
        return Err("no actions to read".into());
    }
    Ok(out)
}

/// `GET /api/machineactions/{id}` on one client, cycling through the actions.
async fn get_actions(
    h: &Harness,
    caller: &Caller,
    ids: Arc<Vec<String>>,
    round: Duration,
) -> Result<Sample, String> {
    let (http, base, auth) = (h.http.clone(), h.base.clone(), caller.authorization.clone());
    load::run_for(round, 1, move |n| {
        let req = http
            .get(format!("{base}/api/machineactions/{}", ids[n % ids.len()]))
            .header(reqwest::header::AUTHORIZATION, &*auth);
        async move { expect_ok(req, "GET /api/machineactions/{id}").await }
    })
    .await
}

/// The gate on one task (synchronous CPU work but for the store lookup), cycling
/// through the actions. With `first_sight`, the verification cache is emptied before
/// every call, so each call verifies the token's signature and claims afresh.
async fn gates(
    h: &Harness,
    caller: &Caller,
    targets: &Arc<Vec<Target>>,
    check: DeviceCheck,
    first_sight: bool,
    round: Duration,
) -> Result<Sample, String> {
    let (state, headers, targets) = (
        h.server.state.clone(),
        caller.headers.clone(),
        targets.clone(),
    );
    load::run_for(round, 1, move |n| {
        let (state, headers, targets) = (state.clone(), headers.clone(), targets.clone());
        async move {
            if first_sight {
                state.verified_tokens.clear();
            }
            pass_gate(&state, &headers, &targets[n % targets.len()], check).await
        }
    })
    .await
}

/// What a `GET /api/machineactions/{id}` goes through before its handler reads the
/// action: the API gate (crates/server/src/api/guard.rs) and the handler's
/// authorization (crates/server/src/api/actions.rs).
async fn pass_gate(
    state: &AppState,
    headers: &HeaderMap,
    target: &Target,
    check: DeviceCheck,
) -> Result<(), String> {
    let api = api_of(&Method::GET, GET_ACTION_ROUTE, GET_ACTION_ROUTE)
        .ok_or_else(|| format!("{GET_ACTION_ROUTE} is not an API route"))?;
    let principal = authenticate(state, headers)
        .await
        .map_err(|e| format!("authenticate: {}", e.0))?;
    let key = RateKey {
        tenant_id: principal.tenant_id.clone(),
        caller: principal.caller_key(),
        api,
    };
    let decision = state
        .limiter
        .acquire(&key, state.clock.now())
        .await
        .map_err(|e| format!("rate limiter: {e}"))?;
    if !decision.admitted {
        return Err(format!(
            "the rate limiter refused a call: {}",
            decision.header()
        ));
    }
    // The guard adds the `RateLimit-Policy` and `RateLimit` headers to every answer.
    let rate_headers = [
        HeaderValue::from_str(&state.limiter.policy().header()),
        HeaderValue::from_str(&decision.header()),
    ];
    if rate_headers.iter().any(Result::is_err) {
        return Err("the rate-limit headers are not valid header values".into());
    }
    let _ = std::hint::black_box(rate_headers);
    let scope = state
        .authorize(&principal, api)
        .map_err(|e| format!("authorize: {e}"))?;
    match check {
        DeviceCheck::Record => scope.check_device(&target.machine),
        DeviceCheck::Lookup => state.check_action_device(&scope, &target.action).await,
    }
    .map_err(|e| format!("device check: {e}"))
}
