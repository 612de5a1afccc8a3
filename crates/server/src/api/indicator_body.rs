//! The body of Submit or Update Indicator (and each item of Import Indicators):
//! camelCase keys as in MDE's documentation, required ones named when missing, and only
//! what appfence acts on accepted: a `FileSha256` indicator with a file action.

use appfence_core::indicators::{
    canonical, check_generate_alert, sha256_value, supported_type_and_action, DEFAULT_SEVERITY,
    SEVERITIES,
};
use appfence_core::Error;
use appfence_proto::Timestamp;
use serde_json::{Map, Value};

use super::body::{json_kind, optional_text};

/// A checked submission, before the caller and time are added.
#[derive(Clone, Debug, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = IndicatorRequest)]
pub struct IndicatorRequest {
    /// For `FileSha256`: 64 hexadecimal characters (stored in lower case).
    #[schema(rename = "indicatorValue")]
    pub indicator_value: String,
    /// Only `FileSha256` (`FileSha1`, `FileMd5` and the network types are refused).
    #[schema(rename = "indicatorType")]
    pub indicator_type: String,
    /// `Block`, `AlertAndBlock`, `BlockAndRemediate` (blocked: no quarantine),
    /// `Audit` (needs `generateAlert` true), `Alert` or `Allowed`.
    pub action: String,
    pub title: String,
    pub description: String,
    pub application: Option<String>,
    #[schema(rename = "expirationTime", value_type = Option<String>)]
    pub expiration_time: Option<Timestamp>,
    /// `Informational` (default), `Low`, `Medium` or `High`.
    pub severity: String,
    #[schema(rename = "recommendedActions")]
    pub recommended_actions: Option<String>,
    #[schema(rename = "generateAlert")]
    pub generate_alert: bool,
    /// Device groups (a list, or MDE's comma-separated string); empty: every device.
    #[schema(rename = "rbacGroupNames")]
    pub rbac_group_names: Vec<String>,
}

impl IndicatorRequest {
    pub fn from_body(body: Option<Map<String, Value>>, now: Timestamp) -> Result<Self, Error> {
        let map = body.ok_or_else(|| {
            Error::InvalidRequestBody(
                "Request body is empty: expected a JSON object with indicatorValue, \
                 indicatorType, action, title and description"
                    .into(),
            )
        })?;
        let required = |key: &str| -> Result<String, Error> {
            optional_text(&map, key)?
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| Error::MissingRequiredParameter(key.into()))
        };
        let value = required("indicatorValue")?;
        let indicator_type = required("indicatorType")?;
        let action = required("action")?;
        let title = required("title")?;
        let description = required("description")?;
        let (indicator_type, action) = supported_type_and_action(&indicator_type, &action)?;
        let indicator_value = sha256_value(&value)?;
        let severity = match optional_text(&map, "severity")? {
            Some(s) => canonical("severity", &s, SEVERITIES)?,
            None => DEFAULT_SEVERITY,
        };
        let expiration_time = match optional_text(&map, "expirationTime")? {
            None => None,
            Some(raw) => {
                let t = Timestamp::parse(&raw).ok_or_else(|| {
                    Error::InvalidRequestBody(format!(
                        "expirationTime '{}' is not a date and time such as 2030-12-31T00:00:00Z",
                        appfence_core::ids::truncate(&raw, 80)
                    ))
                })?;
                if t <= now {
                    return Err(Error::BadRequest(format!(
                        "expirationTime {t} is in the past"
                    )));
                }
                Some(t)
            }
        };
        let generate_alert = generate_alert(&map)?;
        check_generate_alert(action, generate_alert)?;
        Ok(IndicatorRequest {
            indicator_value,
            indicator_type: indicator_type.into(),
            action: action.into(),
            title,
            description,
            application: optional_text(&map, "application")?,
            expiration_time,
            severity: severity.into(),
            recommended_actions: optional_text(&map, "recommendedActions")?,
            generate_alert,
            rbac_group_names: device_group_names(&map)?,
        })
    }
}

/// `generateAlert`: a boolean, or MDE's documented `"True"`/`"False"`; false if absent.
fn generate_alert(map: &Map<String, Value>) -> Result<bool, Error> {
    match map.get("generateAlert") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(Error::InvalidRequestBody(format!(
            "Parameter generateAlert must be true or false, not {}",
            json_kind(other)
        ))),
    }
}

/// `rbacGroupNames`: a list of names, or a comma-separated string (MDE documents both);
/// blanks dropped, repeats (ASCII case-insensitive) dropped. The names are resolved
/// against the device groups when the indicator is stored.
fn device_group_names(map: &Map<String, Value>) -> Result<Vec<String>, Error> {
    let raw: Vec<String> = match map.get("rbacGroupNames") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(Error::InvalidRequestBody(format!(
                    "Parameter rbacGroupNames must be a list of names, not a list holding {}",
                    json_kind(other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(Error::InvalidRequestBody(format!(
                "Parameter rbacGroupNames must be a list of names, not {}",
                json_kind(other)
            )))
        }
    };
    let mut names: Vec<String> = Vec::new();
    for name in raw.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !names.iter().any(|have| have.eq_ignore_ascii_case(name)) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_750_000_000;

    fn parse(v: Value) -> Result<IndicatorRequest, Error> {
        let map = match v {
            Value::Object(m) => Some(m),
            _ => None,
        };
        IndicatorRequest::from_body(map, Timestamp::from_unix_seconds(NOW))
    }

    fn full() -> Value {
        json!({
            "indicatorValue": "AB".repeat(32),
            "indicatorType": "FileSha256",
            "action": "Allowed",
            "title": "build tool",
            "description": "our compiler",
        })
    }

    fn with(changes: Value) -> Value {
        let mut v = full();
        for (k, val) in changes.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    }

    #[test]
    fn a_minimal_body_gets_defaults() {
        let r = parse(full()).unwrap();
        assert_eq!(r.indicator_value, "ab".repeat(32));
        assert_eq!(
            (r.severity.as_str(), r.generate_alert),
            ("Informational", false)
        );
        assert_eq!((r.expiration_time, r.application), (None, None));
        let r = parse(with(json!({
            "severity": "high", "generateAlert": "True", "application": "cc",
            "expirationTime": "2030-01-01T00:00:00Z", "rbacGroupNames": [],
            "recommendedActions": "none", "educateUrl": "https://x"
        })))
        .unwrap();
        assert_eq!(r.severity, "High");
        assert!(r.generate_alert);
        assert_eq!(r.expiration_time, Timestamp::parse("2030-01-01T00:00:00Z"));
        assert!(r.rbac_group_names.is_empty());
        let r = parse(with(
            json!({"action": "block", "rbacGroupNames": "Web, db ,web,"}),
        ))
        .unwrap();
        assert_eq!(r.action, "Block");
        assert_eq!(r.rbac_group_names, ["Web", "db"]);
        let r = parse(with(json!({"rbacGroupNames": ["Web", " "]}))).unwrap();
        assert_eq!(r.rbac_group_names, ["Web"]);
    }

    #[test]
    fn each_problem_has_its_code() {
        for key in [
            "indicatorValue",
            "indicatorType",
            "action",
            "title",
            "description",
        ] {
            let mut v = full();
            v.as_object_mut().unwrap().remove(key);
            assert_eq!(parse(v), Err(Error::MissingRequiredParameter(key.into())));
        }
        assert!(matches!(
            parse(Value::Null),
            Err(Error::InvalidRequestBody(_))
        ));
        assert!(matches!(
            parse(with(json!({"indicatorType": "FileSha1"}))),
            Err(Error::BadRequest(m)) if m.contains("supported indicatorType: FileSha256")
        ));
        assert!(matches!(
            parse(with(json!({"action": "Blocked"}))),
            Err(Error::InvalidRequestBody(m)) if m.contains("valid action")
        ));
        assert!(matches!(
            parse(with(json!({"action": "Audit"}))),
            Err(Error::BadRequest(m)) if m.contains("generateAlert")
        ));
        assert!(parse(with(json!({"action": "Audit", "generateAlert": true}))).is_ok());
        assert!(matches!(
            parse(with(json!({"indicatorValue": "xyz"}))),
            Err(Error::InvalidInput(m)) if m.contains("'xyz'")
        ));
        assert!(matches!(
            parse(with(json!({"expirationTime": "2020-01-01T00:00:00Z"}))),
            Err(Error::BadRequest(m)) if m.contains("in the past")
        ));
        assert!(matches!(
            parse(with(json!({"expirationTime": "tomorrow"}))),
            Err(Error::InvalidRequestBody(_))
        ));
        assert!(matches!(
            parse(with(json!({"rbacGroupNames": 3}))),
            Err(Error::InvalidRequestBody(m)) if m.contains("rbacGroupNames")
        ));
        assert!(matches!(
            parse(with(json!({"rbacGroupNames": [3]}))),
            Err(Error::InvalidRequestBody(m)) if m.contains("rbacGroupNames")
        ));
        assert!(matches!(
            parse(with(json!({"generateAlert": 1}))),
            Err(Error::InvalidRequestBody(_))
        ));
        assert!(matches!(
            parse(with(json!({"title": 5}))),
            Err(Error::InvalidRequestBody(m)) if m.contains("must be a string")
        ));
    }
}
