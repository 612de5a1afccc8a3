//! What both engines share about the lifecycle of credentials: the audit events they
//! append with each change, and the refusals they word the same way.

use appfence_core::audit::{AuditEvent, APP_SECRET_ADDED};
use appfence_core::records::{AppSecret, UserRecord};
use appfence_core::{Error, Result};
use appfence_proto::Timestamp;

/// An audit event of the tenant about `subject`.
pub(crate) fn event(
    tenant_id: &str,
    event: &str,
    subject: &str,
    actor: &str,
    at: Timestamp,
    detail: Option<String>,
) -> AuditEvent {
    AuditEvent {
        at,
        tenant_id: Some(tenant_id.to_string()),
        event: event.to_string(),
        subject: subject.to_string(),
        actor: actor.to_string(),
        detail,
    }
}

/// An event about a user: the subject is the UPN, the detail names the object id.
pub(crate) fn user_event(
    user: &UserRecord,
    name: &str,
    actor: &str,
    at: Timestamp,
    detail: Option<String>,
) -> AuditEvent {
    let oid = format!("oid {}", user.object_id);
    let detail = Some(match detail {
        Some(d) => format!("{oid}; {d}"),
        None => oid,
    });
    event(&user.tenant_id, name, &user.upn, actor, at, detail)
}

/// `AppSecretAdded` for `secret`, at its creation.
pub(crate) fn secret_added(secret: &AppSecret, actor: &str) -> AuditEvent {
    let expires = match secret.expires {
        Some(t) => format!("expires {t}"),
        None => "never expires".to_string(),
    };
    event(
        &secret.tenant_id,
        APP_SECRET_ADDED,
        &secret.client_id,
        actor,
        secret.created,
        Some(format!("secret {}, {expires}", secret.id)),
    )
}

/// The detail of a change of groups.
pub(crate) fn groups_change(before: &[String], after: &[String]) -> String {
    format!("groups [{}] -> [{}]", before.join(", "), after.join(", "))
}

pub(crate) fn no_such_app(client_id: &str) -> Error {
    Error::ResourceNotFound(format!(
        "Application {} was not found",
        appfence_core::ids::truncate(client_id, 100)
    ))
}

/// Refuses one more secret for an application that holds `held` of at most `max`.
pub(crate) fn check_secret_count(held: i64, max: usize) -> Result<()> {
    if usize::try_from(held).unwrap_or(usize::MAX) >= max {
        return Err(Error::BadRequest(format!(
            "The application already has {held} secrets, the most it may hold; \
             remove one first (app secret remove)"
        )));
    }
    Ok(())
}
