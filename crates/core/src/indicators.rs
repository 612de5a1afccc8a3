//! MDE's indicator vocabulary, and the file indicators appfence acts on: `FileSha256`
//! indicators whose action allows (`Allowed`: restricted devices let the file run),
//! blocks (`Block`, `AlertAndBlock`, `BlockAndRemediate`: every device in scope denies
//! executing it, restricted or not) or audits (`Audit`, `Alert`: executions are allowed
//! and reported). The agent hashes executed files with SHA-256 only, so `FileSha1` and
//! `FileMd5` are refused rather than accepted and silently never matched.
//!
//! Precedence: one tenant holds at most one indicator per type and value (submitting
//! it again updates it), so a file has one action per device; should two rules ever name
//! the same hash, the device's policy keeps block over audit over allow, as MDE ranks a
//! blocking file indicator above an allowing one.

use crate::records::IndicatorRecord;
use crate::Error;
use appfence_proto::agent::{AllowlistResponse, FileRule, ProtectedFile};
use appfence_proto::Timestamp;

/// `indicatorType` values MDE knows.
pub const INDICATOR_TYPES: &[&str] = &[
    "FileSha1",
    "FileSha256",
    "FileMd5",
    "CertificateThumbprint",
    "IpAddress",
    "DomainName",
    "Url",
];

/// `action` values MDE knows (`Alert` and `AlertAndBlock` are its retired spellings).
pub const INDICATOR_ACTIONS: &[&str] = &[
    "Warn",
    "Block",
    "Audit",
    "Alert",
    "AlertAndBlock",
    "BlockAndRemediate",
    "Allowed",
];

pub const SEVERITIES: &[&str] = &["Informational", "Low", "Medium", "High"];

pub const TYPE_FILE_SHA256: &str = "FileSha256";
pub const ACTION_ALLOWED: &str = "Allowed";
pub const ACTION_AUDIT: &str = "Audit";

/// The indicator types appfence acts on.
pub const SUPPORTED_TYPES: &[&str] = &[TYPE_FILE_SHA256];

/// The actions appfence acts on for files.
pub const FILE_ACTIONS: &[&str] = &[
    "Block",
    "AlertAndBlock",
    "BlockAndRemediate",
    "Audit",
    "Alert",
    "Allowed",
];

/// What a file indicator's action does on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileEffect {
    /// Denied, restricted or not (`BlockAndRemediate` too: appfence does not
    /// quarantine the file).
    Block,
    /// Allowed and reported.
    Audit,
    /// On the allowlist restricted devices let run.
    Allow,
}

/// The effect of an action of [`FILE_ACTIONS`] (canonical spelling).
pub fn file_effect(action: &str) -> Option<FileEffect> {
    match action {
        "Block" | "AlertAndBlock" | "BlockAndRemediate" => Some(FileEffect::Block),
        "Audit" | "Alert" => Some(FileEffect::Audit),
        "Allowed" => Some(FileEffect::Allow),
        _ => None,
    }
}
pub const DEFAULT_SEVERITY: &str = "Informational";

/// MDE's limit of indicators in one import.
pub const MAX_IMPORT_ITEMS: usize = 500;

/// MDE's limit of active indicators per tenant.
pub const MAX_ACTIVE_INDICATORS: u64 = 15_000;

/// The canonical spelling of `raw` among `known` (matched case-insensitively, as MDE
/// parses its enums), else `InvalidRequestBody` listing the possible values.
pub fn canonical(param: &str, raw: &str, known: &[&'static str]) -> Result<&'static str, Error> {
    known
        .iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(raw.trim()))
        .ok_or_else(|| {
            Error::InvalidRequestBody(format!(
                "'{}' is not a valid {param}; possible values are: {}",
                crate::ids::truncate(raw, 80),
                known.join(", ")
            ))
        })
}

/// The indicator type and action, checked: known to MDE, and supported by appfence.
pub fn supported_type_and_action(
    indicator_type: &str,
    action: &str,
) -> Result<(&'static str, &'static str), Error> {
    let t = canonical("indicatorType", indicator_type, INDICATOR_TYPES)?;
    let a = canonical("action", action, INDICATOR_ACTIONS)?;
    if !SUPPORTED_TYPES.contains(&t) {
        return Err(Error::BadRequest(format!(
            "indicatorType {t} is not supported: the appfence agent identifies files by \
             SHA-256; supported indicatorType: {}",
            SUPPORTED_TYPES.join(", ")
        )));
    }
    if file_effect(a).is_none() {
        return Err(Error::BadRequest(format!(
            "action {a} is not supported for indicatorType {t}; supported actions: {}",
            FILE_ACTIONS.join(", ")
        )));
    }
    Ok((t, a))
}

/// MDE: "The GenerateAlert parameter must be set to TRUE when creating an action with
/// Audit."
pub fn check_generate_alert(action: &str, generate_alert: bool) -> Result<(), Error> {
    if action == ACTION_AUDIT && !generate_alert {
        return Err(Error::BadRequest(
            "generateAlert must be true for action Audit".into(),
        ));
    }
    Ok(())
}

/// A protected file some device of the tenant reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedHit {
    pub machine_id: String,
    pub computer_dns_name: String,
    pub file: ProtectedFile,
}

/// `BadRequest`, saying why, when a blocking action names a file some device reported
/// as one it needs to stay manageable (the agent, the dynamic loader, PID 1). Checked
/// against every device of the tenant, whatever the indicator's groups: a device can
/// move into a group later.
pub fn check_not_protected(
    value: &str,
    action: &str,
    protected: &[ProtectedHit],
) -> Result<(), Error> {
    if file_effect(action) != Some(FileEffect::Block) {
        return Ok(());
    }
    match protected.iter().find(|p| p.file.sha256 == value) {
        None => Ok(()),
        Some(hit) => Err(Error::BadRequest(format!(
            "indicatorValue {value} is {} ({}) on machine {} ({}): blocking it would leave \
             devices unmanageable, so appfence refuses action {action} for it",
            hit.file.role.describe(),
            hit.file.path,
            hit.computer_dns_name,
            hit.machine_id
        ))),
    }
}

/// The file policy of a device in device group `rbac_group_id`: the rules of the
/// indicators active at `now` that apply to the group, each hash in one list only
/// (block, then audit, then allow), sorted by hash.
pub fn compile_policy(
    version: u64,
    indicators: &[IndicatorRecord],
    rbac_group_id: i64,
    now: Timestamp,
) -> AllowlistResponse {
    let mut rules: Vec<(&str, FileEffect, &IndicatorRecord)> = indicators
        .iter()
        .filter(|i| i.indicator_type == TYPE_FILE_SHA256)
        .filter(|i| i.is_active(now) && i.applies_to_group(rbac_group_id))
        .filter_map(|i| file_effect(&i.action).map(|e| (i.indicator_value.as_str(), e, i)))
        .collect();
    // Strongest effect first for each hash; the first one of a hash wins.
    rules.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    rules.dedup_by(|later, first| later.0 == first.0);
    let mut policy = AllowlistResponse {
        version,
        ..AllowlistResponse::default()
    };
    for (hash, effect, i) in rules {
        policy.next_expiry = match (policy.next_expiry, i.expiration_time) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let rule = || FileRule {
            sha256: hash.to_string(),
            action: i.action.clone(),
            indicator_id: i.id.to_string(),
            // MDE's alerting actions alert whatever generateAlert says.
            generate_alert: i.generate_alert
                || matches!(i.action.as_str(), "Alert" | "AlertAndBlock"),
            expires: i.expiration_time,
        };
        match effect {
            FileEffect::Block => policy.block.push(rule()),
            FileEffect::Audit => policy.audit.push(rule()),
            FileEffect::Allow => policy.sha256.push(hash.to_string()),
        }
    }
    policy
}

/// A SHA-256 in lower-case hex, else `InvalidInput` naming the value.
pub fn sha256_value(raw: &str) -> Result<String, Error> {
    let v = raw.trim();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(Error::InvalidInput(format!(
            "indicatorValue '{}' is not a SHA-256 hash (64 hexadecimal characters)",
            crate::ids::truncate(raw, 80)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sha256_with_file_actions_is_supported() {
        assert_eq!(
            supported_type_and_action("filesha256", "ALLOWED"),
            Ok(("FileSha256", "Allowed"))
        );
        for a in FILE_ACTIONS {
            assert_eq!(
                supported_type_and_action("FileSha256", a),
                Ok(("FileSha256", *a))
            );
        }
        let e = supported_type_and_action("FileSha1", "Block").unwrap_err();
        assert_eq!(
            e,
            Error::BadRequest(
                "indicatorType FileSha1 is not supported: the appfence agent identifies files \
                 by SHA-256; supported indicatorType: FileSha256"
                    .into()
            )
        );
        let e = supported_type_and_action("FileSha256", "Warn").unwrap_err();
        assert!(
            matches!(&e, Error::BadRequest(m) if m.starts_with("action Warn is not supported")),
            "{e:?}"
        );
        let e = supported_type_and_action("Sha256", "Allowed").unwrap_err();
        assert!(
            matches!(&e, Error::InvalidRequestBody(m) if m.starts_with("'Sha256' is not a valid indicatorType; possible values are: FileSha1,")),
            "{e:?}"
        );
        let e = supported_type_and_action("FileSha256", "AlwaysAllow").unwrap_err();
        assert!(matches!(e, Error::InvalidRequestBody(m) if m.contains("valid action")));
        assert!(check_generate_alert("Audit", false).is_err());
        assert!(check_generate_alert("Audit", true).is_ok());
        assert!(check_generate_alert("Block", false).is_ok());
    }

    fn hit(hash: &str) -> ProtectedHit {
        ProtectedHit {
            machine_id: "m1".into(),
            computer_dns_name: "web-01".into(),
            file: ProtectedFile {
                sha256: hash.into(),
                path: "/lib64/ld-linux-x86-64.so.2".into(),
                role: appfence_proto::agent::ProtectedRole::Loader,
            },
        }
    }

    #[test]
    fn protected_files_cannot_be_blocked_but_can_be_audited() {
        let h = "a".repeat(64);
        let hits = [hit(&h)];
        for a in ["Block", "AlertAndBlock", "BlockAndRemediate"] {
            let e = check_not_protected(&h, a, &hits).unwrap_err();
            assert!(
                matches!(&e, Error::BadRequest(m) if m.contains("the dynamic loader (/lib64/ld-linux-x86-64.so.2) on machine web-01")),
                "{e:?}"
            );
        }
        for a in ["Audit", "Alert", "Allowed"] {
            assert!(check_not_protected(&h, a, &hits).is_ok());
        }
        assert!(check_not_protected(&"b".repeat(64), "Block", &hits).is_ok());
    }

    fn record(
        id: i64,
        n: u8,
        action: &str,
        groups: &[i64],
        expires: Option<i64>,
    ) -> IndicatorRecord {
        let mut r = crate::records::tests_support::indicator(id, &format!("{n:02x}").repeat(32));
        r.action = action.into();
        r.rbac_group_ids = groups.to_vec();
        r.expiration_time = expires.map(Timestamp::from_unix_seconds);
        r
    }

    #[test]
    fn policies_keep_what_applies_to_the_group_block_first() {
        let now = Timestamp::from_unix_seconds(100);
        let all = [
            record(1, 1, "Allowed", &[], None),
            record(2, 2, "Block", &[], Some(500)),
            record(3, 3, "Audit", &[7], None),
            record(4, 4, "AlertAndBlock", &[8], None),
            record(5, 5, "Block", &[], Some(50)),
            // The same hash allowed and blocked: block wins.
            record(6, 1, "BlockAndRemediate", &[7], Some(300)),
        ];
        let p = compile_policy(9, &all, 7, now);
        assert_eq!(p.version, 9);
        assert!(p.sha256.is_empty(), "{:?}", p.sha256);
        let blocked: Vec<(&str, &str)> = p
            .block
            .iter()
            .map(|r| (r.indicator_id.as_str(), r.action.as_str()))
            .collect();
        assert_eq!(blocked, [("6", "BlockAndRemediate"), ("2", "Block")]);
        assert_eq!(p.audit.len(), 1);
        assert_eq!(p.audit[0].indicator_id, "3");
        assert_eq!(p.next_expiry, Some(Timestamp::from_unix_seconds(300)));

        let ungrouped = compile_policy(9, &all, 0, now);
        assert_eq!(ungrouped.sha256, vec!["01".repeat(32)]);
        assert_eq!(ungrouped.block.len(), 1);
        assert!(ungrouped.audit.is_empty());
        let g8 = compile_policy(9, &all, 8, now);
        assert!(g8
            .block
            .iter()
            .any(|r| r.indicator_id == "4" && r.generate_alert));
    }

    #[test]
    fn hashes_are_normalised_or_named() {
        let h = "A".repeat(64);
        assert_eq!(sha256_value(&format!(" {h} ")), Ok("a".repeat(64)));
        assert_eq!(
            sha256_value("abc"),
            Err(Error::InvalidInput(
                "indicatorValue 'abc' is not a SHA-256 hash (64 hexadecimal characters)".into()
            ))
        );
        assert!(sha256_value(&"g".repeat(64)).is_err());
    }
}
