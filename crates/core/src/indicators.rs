//! MDE's indicator vocabulary, and the one kind of indicator appfence acts on: a
//! `FileSha256` indicator with action `Allowed` puts a file on the tenant's allowlist,
//! which restricted devices let run.

use crate::Error;

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
pub const DEFAULT_SEVERITY: &str = "Informational";

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
    if t != TYPE_FILE_SHA256 || a != ACTION_ALLOWED {
        return Err(Error::BadRequest(format!(
            "appfence supports only indicatorType FileSha256 with action Allowed (the \
             allowlist of files that restricted devices let run), not indicatorType {t} \
             with action {a}"
        )));
    }
    Ok((t, a))
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
    fn only_allowed_file_sha256_is_supported() {
        assert_eq!(
            supported_type_and_action("filesha256", "ALLOWED"),
            Ok(("FileSha256", "Allowed"))
        );
        let e = supported_type_and_action("FileSha1", "Allowed").unwrap_err();
        assert!(
            matches!(&e, Error::BadRequest(m) if m.contains("not indicatorType FileSha1 with action Allowed")),
            "{e:?}"
        );
        let e = supported_type_and_action("FileSha256", "Block").unwrap_err();
        assert!(matches!(e, Error::BadRequest(_)));
        let e = supported_type_and_action("Sha256", "Allowed").unwrap_err();
        assert!(
            matches!(&e, Error::InvalidRequestBody(m) if m.starts_with("'Sha256' is not a valid indicatorType; possible values are: FileSha1,")),
            "{e:?}"
        );
        let e = supported_type_and_action("FileSha256", "AlwaysAllow").unwrap_err();
        assert!(matches!(e, Error::InvalidRequestBody(_)));
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
