//! Alerts: what agents see, raised as MDE alerts. This module holds the vocabulary
//! (statuses, classifications, determinations), an analyst's change and its checks, and
//! the stored alert; [`detectors`] decides which events become which alerts.

pub mod detectors;

use appfence_proto::alert::{Alert, AlertComment, AlertEvidence, AlertUpdate, RelatedUser};
use appfence_proto::Timestamp;

use crate::Error;

pub use detectors::{AlertCandidate, AlertSettings, Detector, IndicatorInfo};

/// MDE's alert statuses an analyst may set (`Unknown` is never set).
pub const STATUSES: &[&str] = &["New", "InProgress", "Resolved"];
/// MDE's `severity` values.
pub const SEVERITIES: &[&str] = &["UnSpecified", "Informational", "Low", "Medium", "High"];
/// MDE's `classification` values, as the alert resource lists them.
pub const CLASSIFICATIONS: &[&str] = &[
    "TruePositive",
    "InformationalExpectedActivity",
    "FalsePositive",
];
/// MDE's `determination` values, as the alert resource names them.
pub const DETERMINATIONS: &[&str] = &[
    "MultiStagedAttack",
    "MaliciousUserActivity",
    "CompromisedUser",
    "Malware",
    "Phishing",
    "UnwantedSoftware",
    "SecurityTesting",
    "LineOfBusinessApplication",
    "ConfirmedUserActivity",
    "Clean",
    "InsufficientData",
    "Other",
];
/// Other spellings MDE's own pages use for the same values (its Update alert page names
/// `NotMalicious` and `ConfirmedActivity`, its portal "Informational, expected activity").
const ALIASES: &[(&str, &str)] = &[
    ("NotMalicious", "Clean"),
    ("ConfirmedActivity", "ConfirmedUserActivity"),
    ("CompromisedAccount", "CompromisedUser"),
    (
        "Informational, expected activity",
        "InformationalExpectedActivity",
    ),
];

/// Longest `assignedTo` accepted.
pub const MAX_ASSIGNED_TO_CHARS: usize = 256;
/// Longest comment accepted.
pub const MAX_COMMENT_CHARS: usize = 4000;
/// Most comments one alert keeps: a further one is refused (400), so an alert's size,
/// and a page of 10,000 of them, stays bounded.
pub const MAX_COMMENTS_PER_ALERT: usize = 100;
/// Most alert ids in one Batch update alerts call.
pub const MAX_BATCH_UPDATE: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertStatus {
    New,
    InProgress,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::New => "New",
            AlertStatus::InProgress => "InProgress",
            AlertStatus::Resolved => "Resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            AlertStatus::New,
            AlertStatus::InProgress,
            AlertStatus::Resolved,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// A checked change of one or more alerts (Update alert, Batch update alerts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertChange {
    pub status: Option<AlertStatus>,
    /// `Some("")` unassigns.
    pub assigned_to: Option<String>,
    pub classification: Option<&'static str>,
    pub determination: Option<&'static str>,
    pub comment: Option<String>,
}

fn canonical(
    property: &str,
    value: &str,
    allowed: &'static [&'static str],
) -> Result<&'static str, Error> {
    let v = value.trim();
    let aliased = ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(v))
        .map_or(v, |(_, to)| *to);
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(aliased))
        .copied()
        .ok_or_else(|| {
            Error::InvalidRequestBody(format!(
                "'{}' is not a valid {property}; expected one of {}",
                crate::ids::truncate(v, 64),
                allowed.join(", ")
            ))
        })
}

impl AlertChange {
    /// Checks an update body: known values only, bounded text, something to change.
    pub fn from_update(update: AlertUpdate) -> Result<Self, Error> {
        let status = match update.status {
            None => None,
            Some(s) => Some(AlertStatus::parse(&s).ok_or_else(|| {
                Error::InvalidRequestBody(format!(
                    "'{}' is not a valid status; expected one of {}",
                    crate::ids::truncate(&s, 64),
                    STATUSES.join(", ")
                ))
            })?),
        };
        let classification = update
            .classification
            .map(|c| canonical("classification", &c, CLASSIFICATIONS))
            .transpose()?;
        let determination = update
            .determination
            .map(|d| canonical("determination", &d, DETERMINATIONS))
            .transpose()?;
        let assigned_to = update.assigned_to.map(|a| a.trim().to_string());
        if let Some(a) = &assigned_to {
            if a.chars().count() > MAX_ASSIGNED_TO_CHARS || a.chars().any(char::is_control) {
                return Err(Error::InvalidRequestBody(format!(
                    "assignedTo must be at most {MAX_ASSIGNED_TO_CHARS} characters without control characters"
                )));
            }
        }
        let comment = update.comment.map(|c| c.trim().to_string());
        if let Some(c) = &comment {
            if c.is_empty() || c.chars().count() > MAX_COMMENT_CHARS {
                return Err(Error::InvalidRequestBody(format!(
                    "comment must have 1 to {MAX_COMMENT_CHARS} characters"
                )));
            }
        }
        let change = AlertChange {
            status,
            assigned_to,
            classification,
            determination,
            comment,
        };
        if change == AlertChange::default() {
            return Err(Error::InvalidRequestBody(
                "Nothing to update: give at least one of status, assignedTo, classification, determination or comment".into(),
            ));
        }
        Ok(change)
    }

    /// The audit log's record of this change to alert `id` by `actor`.
    pub fn audit_event(
        &self,
        tenant_id: &str,
        id: &str,
        actor: &str,
        now: Timestamp,
    ) -> crate::audit::AuditEvent {
        crate::audit::AuditEvent {
            at: now,
            tenant_id: Some(tenant_id.to_string()),
            event: crate::audit::ALERT_UPDATED.to_string(),
            subject: id.to_string(),
            actor: actor.to_string(),
            detail: Some(self.describe()),
        }
    }

    /// A short account of the change for the audit log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_str()));
        }
        if let Some(a) = &self.assigned_to {
            parts.push(format!("assignedTo={a}"));
        }
        if let Some(c) = self.classification {
            parts.push(format!("classification={c}"));
        }
        if let Some(d) = self.determination {
            parts.push(format!("determination={d}"));
        }
        if self.comment.is_some() {
            parts.push("comment added".into());
        }
        parts.join(", ")
    }
}

/// An alert as stored, with what the list and get calls send.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRecord {
    pub tenant_id: String,
    pub id: String,
    pub machine_id: String,
    pub computer_dns_name: Option<String>,
    pub rbac_group_id: i64,
    pub rbac_group_name: Option<String>,
    pub detector_id: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub severity: String,
    pub detection_source: String,
    pub threat_name: Option<String>,
    pub mitre_techniques: Vec<String>,
    pub status: String,
    pub classification: Option<String>,
    pub determination: Option<String>,
    pub assigned_to: Option<String>,
    pub created: Timestamp,
    pub first_event: Timestamp,
    pub last_event: Timestamp,
    pub last_update: Timestamp,
    pub resolved: Option<Timestamp>,
    /// How many events the alert stands for (grouping), an appfence addition kept out
    /// of the wire entity.
    pub event_count: i64,
    pub related_user: Option<RelatedUser>,
    pub comments: Vec<AlertComment>,
    /// Empty when the caller did not ask for it.
    pub evidence: Vec<AlertEvidence>,
}

impl AlertRecord {
    /// Applies an analyst's change: a comment is added (refused beyond
    /// [`MAX_COMMENTS_PER_ALERT`]), `Resolved` sets `resolvedTime` (leaving it clears
    /// it), an empty `assignedTo` unassigns; `lastUpdateTime` becomes `now`.
    pub fn apply(
        &mut self,
        change: &AlertChange,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), Error> {
        if let Some(comment) = &change.comment {
            if self.comments.len() >= MAX_COMMENTS_PER_ALERT {
                return Err(Error::InvalidRequestBody(format!(
                    "Alert {} already has {MAX_COMMENTS_PER_ALERT} comments, the most one alert keeps",
                    self.id
                )));
            }
            self.comments.push(AlertComment {
                comment: comment.clone(),
                created_by: actor.to_string(),
                created_time: now,
            });
        }
        if let Some(status) = change.status {
            match status {
                AlertStatus::Resolved if self.status != "Resolved" => self.resolved = Some(now),
                AlertStatus::Resolved => {}
                _ => self.resolved = None,
            }
            self.status = status.as_str().to_string();
        }
        if let Some(a) = &change.assigned_to {
            self.assigned_to = (!a.is_empty()).then(|| a.clone());
        }
        if let Some(c) = change.classification {
            self.classification = Some(c.to_string());
        }
        if let Some(d) = change.determination {
            self.determination = Some(d.to_string());
        }
        self.last_update = now;
        Ok(())
    }

    pub fn to_wire(&self, odata_context: Option<String>) -> Alert {
        Alert {
            odata_context,
            id: self.id.clone(),
            incident_id: None,
            investigation_id: None,
            assigned_to: self.assigned_to.clone(),
            severity: self.severity.clone(),
            status: self.status.clone(),
            classification: self.classification.clone(),
            determination: self.determination.clone(),
            investigation_state: None,
            detection_source: self.detection_source.clone(),
            detector_id: self.detector_id.clone(),
            category: self.category.clone(),
            threat_family_name: None,
            title: self.title.clone(),
            description: self.description.clone(),
            alert_creation_time: self.created,
            first_event_time: Some(self.first_event),
            last_event_time: Some(self.last_event),
            last_update_time: self.last_update,
            resolved_time: self.resolved,
            machine_id: self.machine_id.clone(),
            computer_dns_name: self.computer_dns_name.clone(),
            rbac_group_name: self.rbac_group_name.clone(),
            aad_tenant_id: self.tenant_id.clone(),
            threat_name: self.threat_name.clone(),
            mitre_techniques: self.mitre_techniques.clone(),
            related_user: self.related_user.clone(),
            comments: self.comments.clone(),
            evidence: self.evidence.clone(),
        }
    }
}

/// A new alert id in MDE's shape (`da637472900382838869_1364969609`): `af`, the
/// creation time in ticks, `_`, and 31 random bits, so ids sort roughly by creation and
/// never collide between replicas.
pub fn new_alert_id(created: Timestamp) -> String {
    let r = crate::ids::random_bytes::<4>();
    let random = u32::from_le_bytes(r) & 0x7fff_ffff;
    format!("af{}_{random}", created.ticks())
}

/// Whether `s` has the shape of an alert id (any MDE-like id: letters, digits, `_`,
/// `-`), so a malformed one is answered 404 without a query.
pub fn is_alert_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(f: impl FnOnce(&mut AlertUpdate)) -> AlertUpdate {
        let mut u = AlertUpdate::default();
        f(&mut u);
        u
    }

    #[test]
    fn changes_are_checked_and_canonical() {
        let c = AlertChange::from_update(update(|u| {
            u.status = Some("resolved".into());
            u.classification = Some("Informational, expected activity".into());
            u.determination = Some("NotMalicious".into());
            u.assigned_to = Some(" secop2@contoso.com ".into());
            u.comment = Some("Resolve my alert".into());
        }))
        .unwrap();
        assert_eq!(c.status, Some(AlertStatus::Resolved));
        assert_eq!(c.classification, Some("InformationalExpectedActivity"));
        assert_eq!(c.determination, Some("Clean"));
        assert_eq!(c.assigned_to.as_deref(), Some("secop2@contoso.com"));
        assert_eq!(
            c.describe(),
            "status=Resolved, assignedTo=secop2@contoso.com, classification=InformationalExpectedActivity, determination=Clean, comment added"
        );
    }

    #[test]
    fn bad_updates_name_the_problem() {
        let err = |u| match AlertChange::from_update(u) {
            Err(Error::InvalidRequestBody(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            err(update(|u| u.status = Some("Closed".into()))).starts_with(
                "'Closed' is not a valid status; expected one of New, InProgress, Resolved"
            )
        );
        assert!(err(update(|u| u.classification = Some("Maybe".into())))
            .contains("not a valid classification"));
        assert!(err(update(|u| u.determination = Some("Apt".into())))
            .contains("not a valid determination"));
        assert!(err(update(
            |u| u.comment = Some("x".repeat(MAX_COMMENT_CHARS + 1))
        ))
        .contains("comment must have"));
        assert!(err(update(|u| u.assigned_to = Some("a\u{7}b".into()))).contains("assignedTo"));
        assert!(err(AlertUpdate::default()).starts_with("Nothing to update"));
    }

    #[test]
    fn ids_have_mde_shape() {
        let id = new_alert_id(Timestamp::from_ticks(638_000_000_000_000_000));
        assert!(id.starts_with("af638000000000000000_"), "{id}");
        assert!(is_alert_id(&id));
        assert!(is_alert_id("da637472900382838869_1364969609"));
        assert!(!is_alert_id("x'; drop"));
        assert!(!is_alert_id(""));
    }
}
