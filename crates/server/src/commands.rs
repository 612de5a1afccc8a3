//! The state-changing operations a caller can perform, whichever door it came through:
//! the public API (JSON, bearer token) and the web console (forms, session cookie)
//! both call these, so that permissions, device groups, rate limits, validation and
//! notifications are the same for both.

use appfence_core::authz::{Api, Principal};
use appfence_core::ids::{new_guid, parse_guid, truncate};
use appfence_core::indicators::{check_not_protected, ProtectedHit};
use appfence_core::odata::{CmpOp, Expr, IndicatorField, Query, Value};
use appfence_core::ratelimit::Decision;
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    ActionRecord, IndicatorRecord, IndicatorSubmission, StatusChange, TransitionOutcome,
};
use appfence_core::{Error, MachineRef};
use appfence_proto::{ActionStatus, ActionType};
use appfence_store::Change;

use crate::api::{ActionRequest, IndicatorRequest};
use crate::ratelimit::RateKey;
use crate::AppState;

/// Counts one call of `api` against the caller's rate limit; `TooManyRequests` when the
/// quota is spent. The API's gate calls it for every API request; the console for the
/// calls it makes on a user's behalf (the same key, so the two share one quota).
pub async fn admit(state: &AppState, principal: &Principal, api: Api) -> Result<Decision, Error> {
    let key = RateKey {
        tenant_id: principal.tenant_id.clone(),
        caller: principal.caller_key(),
        api,
    };
    let decision = state.limiter.acquire(&key, state.clock.now()).await?;
    if !decision.admitted {
        crate::telemetry::rate_limited(api.name());
    }
    Ok(decision)
}

/// The API that creates actions of this type: restrict, unrestrict or offboard.
pub fn action_api(action_type: ActionType) -> Result<Api, Error> {
    match action_type {
        ActionType::RestrictCodeExecution => Ok(Api::RestrictCodeExecution),
        ActionType::UnrestrictCodeExecution => Ok(Api::UnrestrictCodeExecution),
        ActionType::Offboard => Ok(Api::OffboardMachine),
        other => Err(Error::Internal(format!(
            "appfence does not create {} actions",
            other.as_str()
        ))),
    }
}

/// Restricts, unrestricts or offboards a machine (`id`, `aadDeviceId` or
/// `computerDnsName`).
///
/// An offboarded machine takes no more actions (400), and neither does a machine with
/// an open offboard action: it is leaving. An offboard needs no enforcement capability
/// (an agent too old to know offboarding answers `Failed`, which offboards the machine
/// all the same).
pub async fn create_action(
    state: &AppState,
    principal: &Principal,
    machine: &str,
    request: ActionRequest,
    action_type: ActionType,
) -> Result<ActionRecord, Error> {
    let api = action_api(action_type)?;
    let scope = state.authorize(principal, api)?;
    let machine_ref = MachineRef::parse(machine)?;
    let machine = state
        .store
        .machine(&principal.tenant_id, &machine_ref)
        .await?
        .ok_or_else(|| Error::machine_not_found(&truncate(machine, 80)))?;
    scope.check_device(&machine)?;
    if let Some(when) = machine.offboarded {
        return Err(Error::BadRequest(format!(
            "Machine {} was offboarded at {when}: it takes no more actions",
            machine.id
        )));
    }
    if action_type.is_restrict_family() {
        let open = state.store.open_actions(&machine.id).await?;
        if let Some(leaving) = open.iter().find(|a| a.action_type == ActionType::Offboard) {
            return Err(Error::BadRequest(format!(
                "Machine {} is being offboarded (action {}): it takes no other action",
                machine.id, leaving.id
            )));
        }
        appfence_core::capability::check_can_restrict(&machine, &state.config.min_agent_version)?;
    }
    let now = state.clock.now();
    let action = ActionRecord {
        tenant_id: principal.tenant_id.clone(),
        id: new_guid(),
        action_type,
        title: request.title,
        requestor: principal.requestor().to_string(),
        requestor_comment: request.comment,
        status: ActionStatus::Pending,
        machine_id: machine.id.clone(),
        computer_dns_name: machine.computer_dns_name.clone(),
        created: now,
        last_update: now,
        cancellation_requestor: None,
        cancellation_comment: None,
        cancellation_time: None,
        error_h_result: 0,
        external_id: request.external_id,
        request_source: "PublicApi".into(),
        troubleshoot_info: None,
    };
    state.store.create_action(&action).await?;
    crate::telemetry::action_created(&action);
    state.announce(Change::Machine(machine.id.clone())).await;
    tracing::info!(action = %action.id, machine = %machine.id, kind = action_type.as_str(), requestor = %action.requestor, "action created");
    Ok(action)
}

/// An action id from a path: a GUID, else `InvalidInput`.
pub fn action_id(raw: &str) -> Result<String, Error> {
    parse_guid(raw).ok_or_else(|| {
        Error::InvalidInput(format!(
            "MachineAction id '{}' is not a GUID",
            truncate(raw, 80)
        ))
    })
}

/// Cancels a `Pending` or `InProgress` action; `ActionAlreadyFinal` otherwise.
pub async fn cancel_action(
    state: &AppState,
    principal: &Principal,
    id: &str,
    comment: Option<String>,
    through: &str,
) -> Result<ActionRecord, Error> {
    let scope = state.authorize(principal, Api::CancelMachineAction)?;
    let id = action_id(id)?;
    // Tenant scoping: an action of another tenant is "not found".
    let action = state
        .store
        .action(&principal.tenant_id, &id)
        .await?
        .ok_or_else(|| Error::action_not_found(&id))?;
    state.check_action_device(&scope, &action).await?;
    let change = StatusChange {
        to: ActionStatus::Cancelled,
        at: state.clock.now(),
        actor: principal.requestor().to_string(),
        reason: Some(format!("cancelled through {through}")),
        error_h_result: None,
        troubleshoot_info: None,
        cancellation_comment: comment,
    };
    match state.store.transition(&id, &change).await? {
        TransitionOutcome::Applied(action) => {
            crate::telemetry::action_changed(&action);
            state
                .announce(Change::Machine(action.machine_id.clone()))
                .await;
            tracing::info!(action = %action.id, requestor = %change.actor, "action cancelled");
            Ok(action)
        }
        TransitionOutcome::Refused(current) => Err(Error::ActionAlreadyFinal(format!(
            "MachineAction {} is already {} and cannot be cancelled",
            current.id,
            current.status.as_str()
        ))),
    }
}

/// Creates an indicator, or updates the one with the same value and type.
pub async fn submit_indicator(
    state: &AppState,
    principal: &Principal,
    request: IndicatorRequest,
) -> Result<IndicatorRecord, Error> {
    let scope = state.authorize(principal, Api::SubmitIndicator)?;
    let protected = state.store.protected_files(&principal.tenant_id).await?;
    let submission = prepare_indicator(state, principal, &scope, request, &protected).await?;
    let stored = state
        .store
        .submit_indicator(&submission, &principal.indicator_scope())
        .await?;
    tracing::info!(indicator = stored.id, value = %stored.indicator_value, action = %stored.action, by = %submission.submitter_name, "indicator submitted");
    // Waiting agents answer at once with the new policy version.
    state
        .announce(Change::Tenant(principal.tenant_id.clone()))
        .await;
    Ok(stored)
}

/// MDE's Import Indicators: each item is checked and stored on its own (a refused one
/// leaves the others, as MDE's per-indicator results say), all stored ones in one
/// transaction. `items` are the parsed bodies, in request order.
pub async fn import_indicators(
    state: &AppState,
    principal: &Principal,
    items: Vec<Result<IndicatorRequest, Error>>,
) -> Result<Vec<Result<IndicatorRecord, Error>>, Error> {
    let scope = state.authorize(principal, Api::ImportIndicators)?;
    let protected = state.store.protected_files(&principal.tenant_id).await?;
    let mut checked = Vec::with_capacity(items.len());
    let mut seen: Vec<String> = Vec::new();
    for item in items {
        let prepared = match item {
            Ok(request) => prepare_indicator(state, principal, &scope, request, &protected).await,
            Err(e) => Err(e),
        };
        // The same file twice in one import: the first one counts, as a second call
        // would update it; refusing the repeat keeps the answer unambiguous.
        let prepared = prepared.and_then(|s| {
            let key = format!("{}:{}", s.indicator_type, s.indicator_value);
            if seen.contains(&key) {
                return Err(Error::BadRequest(format!(
                    "indicatorValue {} appears earlier in this import",
                    s.indicator_value
                )));
            }
            seen.push(key);
            Ok(s)
        });
        checked.push(prepared);
    }
    let submissions: Vec<IndicatorSubmission> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let mut stored = state
        .store
        .submit_indicators(&submissions, &principal.indicator_scope())
        .await?
        .into_iter();
    let outcomes: Vec<Result<IndicatorRecord, Error>> = checked
        .into_iter()
        .map(|c| match c {
            Ok(_) => stored
                .next()
                .unwrap_or_else(|| Err(Error::internal("an import item had no outcome"))),
            Err(e) => Err(e),
        })
        .collect();
    let count = outcomes.iter().filter(|o| o.is_ok()).count();
    tracing::info!(stored = count, failed = outcomes.len() - count, by = %principal.requestor(), "indicators imported");
    if count > 0 {
        state
            .announce(Change::Tenant(principal.tenant_id.clone()))
            .await;
    }
    Ok(outcomes)
}

/// The submission of a checked request: device groups resolved (unknown → 400 naming
/// it) and within the caller's reach, the tenant's protected files left unblocked.
async fn prepare_indicator(
    state: &AppState,
    principal: &Principal,
    scope: &DeviceScope,
    request: IndicatorRequest,
    protected: &[ProtectedHit],
) -> Result<IndicatorSubmission, Error> {
    let (names, ids) = resolve_device_groups(state, principal, &request.rbac_group_names)?;
    check_indicator_groups(state, principal, scope, &ids)?;
    if *scope != DeviceScope::All {
        // A user limited to some device groups changes an existing indicator only if
        // it reaches no further than they do.
        if let Some(current) = existing_indicator(
            state,
            principal,
            &request.indicator_type,
            &request.indicator_value,
        )
        .await?
        {
            check_indicator_groups(state, principal, scope, &current.rbac_group_ids)?;
        }
    }
    check_not_protected(&request.indicator_value, &request.action, protected)?;
    Ok(IndicatorSubmission {
        tenant_id: principal.tenant_id.clone(),
        indicator_value: request.indicator_value,
        indicator_type: request.indicator_type,
        action: request.action,
        application: request.application,
        title: request.title,
        description: request.description,
        recommended_actions: request.recommended_actions,
        severity: request.severity,
        expiration_time: request.expiration_time,
        generate_alert: request.generate_alert,
        rbac_group_names: names,
        rbac_group_ids: ids,
        submitted_by: principal.indicator_creator().to_string(),
        submitter_name: principal.requestor().to_string(),
        source_type: principal.source_type().to_string(),
        at: state.clock.now(),
    })
}

/// The canonical names and ids of the tenant's device groups named (ASCII
/// case-insensitively); `BadRequest` naming the first unknown one.
fn resolve_device_groups(
    state: &AppState,
    principal: &Principal,
    names: &[String],
) -> Result<(Vec<String>, Vec<i64>), Error> {
    let policy = state.access.current();
    let groups = policy.rbac(&principal.tenant_id).device_groups();
    let mut resolved = (Vec::new(), Vec::new());
    for name in names {
        let group = groups
            .iter()
            .find(|g| g.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
                Error::BadRequest(format!(
                    "rbacGroupNames: there is no device group '{}'; device groups: {}",
                    truncate(name, 80),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
        if !resolved.1.contains(&group.id) {
            resolved.0.push(group.name.clone());
            resolved.1.push(group.id);
        }
    }
    Ok(resolved)
}

/// `Forbidden` unless the caller may act on every device the indicator applies to:
/// the groups `ids`, or every device when there are none.
fn check_indicator_groups(
    state: &AppState,
    principal: &Principal,
    scope: &DeviceScope,
    ids: &[i64],
) -> Result<(), Error> {
    let DeviceScope::Groups(_) = scope else {
        return Ok(());
    };
    let policy = state.access.current();
    let groups = policy.rbac(&principal.tenant_id).device_groups();
    let name_of = |id: i64| {
        groups
            .iter()
            .find(|g| g.id == id)
            .map_or_else(|| format!("#{id}"), |g| g.name.clone())
    };
    if ids.is_empty() {
        if let Some(g) = groups.iter().find(|g| !scope.allows(g.id)) {
            return Err(Error::Forbidden(format!(
                "User has no access to device group '{}': an indicator without \
                 rbacGroupNames applies to every device",
                g.name
            )));
        }
        return Ok(());
    }
    match ids.iter().find(|id| !scope.allows(**id)) {
        Some(id) => Err(Error::Forbidden(format!(
            "User has no access to device group '{}'",
            name_of(*id)
        ))),
        None => Ok(()),
    }
}

/// The tenant's indicator with this type and value, if any.
async fn existing_indicator(
    state: &AppState,
    principal: &Principal,
    indicator_type: &str,
    value: &str,
) -> Result<Option<IndicatorRecord>, Error> {
    let eq = |field, v: &str| Expr::Compare {
        field,
        op: CmpOp::Eq,
        value: Value::String(v.to_string()),
    };
    let query = Query {
        filter: Some(Expr::And(
            Box::new(eq(IndicatorField::IndicatorType, indicator_type)),
            Box::new(eq(IndicatorField::IndicatorValue, value)),
        )),
        top: Some(1),
        ..Query::default()
    };
    let page = state
        .store
        .list_indicators(&principal.tenant_id, &query)
        .await?;
    Ok(page.items.into_iter().next())
}

/// The tenant's indicator with this id, if any.
async fn indicator_by_id(
    state: &AppState,
    principal: &Principal,
    number: i64,
) -> Result<Option<IndicatorRecord>, Error> {
    let query = Query {
        filter: Some(Expr::Compare {
            field: IndicatorField::Id,
            op: CmpOp::Eq,
            value: Value::Integer(number),
        }),
        top: Some(1),
        ..Query::default()
    };
    let page = state
        .store
        .list_indicators(&principal.tenant_id, &query)
        .await?;
    Ok(page.items.into_iter().next())
}

/// An indicator id from a path: a positive number, else `InvalidInput`.
pub fn indicator_id(raw: &str) -> Result<i64, Error> {
    raw.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        Error::InvalidInput(format!(
            "Indicator id '{}' is not a number",
            truncate(raw, 80)
        ))
    })
}

/// Deletes an indicator; `ResourceNotFound` when there is none the caller may delete.
pub async fn delete_indicator(
    state: &AppState,
    principal: &Principal,
    number: i64,
) -> Result<(), Error> {
    let scope = state.authorize(principal, Api::DeleteIndicator)?;
    if scope != DeviceScope::All {
        if let Some(current) = indicator_by_id(state, principal, number).await? {
            check_indicator_groups(state, principal, &scope, &current.rbac_group_ids)?;
        }
    }
    let deleted = state
        .store
        .delete_indicator(&principal.tenant_id, number, &principal.indicator_scope())
        .await?;
    if !deleted {
        return Err(Error::indicator_not_found(&number.to_string()));
    }
    tracing::info!(indicator = number, by = %principal.requestor(), "indicator deleted");
    state
        .announce(Change::Tenant(principal.tenant_id.clone()))
        .await;
    Ok(())
}

/// Applies an analyst's change to alerts `ids` (Update alert: one; Batch update alerts:
/// several), all or nothing, within the caller's device groups; the store records each
/// change in the audit log with the caller as its actor.
pub async fn update_alerts(
    state: &AppState,
    principal: &Principal,
    api: Api,
    ids: &[String],
    change: &appfence_core::alerts::AlertChange,
) -> Result<Vec<appfence_core::alerts::AlertRecord>, Error> {
    let scope = state.authorize(principal, api)?;
    if let Some(bad) = ids
        .iter()
        .find(|id| !appfence_core::alerts::is_alert_id(id))
    {
        return Err(Error::alert_not_found(bad));
    }
    let actor = principal.requestor().to_string();
    let updated = state
        .store
        .update_alerts(
            &principal.tenant_id,
            ids,
            change,
            &scope,
            &actor,
            state.clock.now(),
        )
        .await?;
    tracing::info!(tenant_id = %principal.tenant_id, count = updated.len(), change = %change.describe(), %actor, "alerts updated");
    // Open device pages show their open alerts: tell them (every replica's).
    let mut machines: Vec<&str> = updated.iter().map(|a| a.machine_id.as_str()).collect();
    machines.sort_unstable();
    machines.dedup();
    for machine in machines {
        state.announce(Change::Observed(machine.to_string())).await;
    }
    Ok(updated)
}

/// The alert `id` of the caller's tenant, with its evidence, if `principal` may call
/// `api` and the alert's device is within their device groups; else `ResourceNotFound`
/// (an id of the wrong shape is answered without a query).
pub async fn visible_alert(
    state: &AppState,
    principal: &Principal,
    api: Api,
    id: &str,
) -> Result<appfence_core::alerts::AlertRecord, Error> {
    let scope = state.authorize(principal, api)?;
    if !appfence_core::alerts::is_alert_id(id) {
        return Err(Error::alert_not_found(id));
    }
    state
        .store
        .get_alert(&principal.tenant_id, id, &scope)
        .await?
        .ok_or_else(|| Error::alert_not_found(id))
}
