//! The OData `$filter` of a list of alerts, from what a caller wants to see.

use appfence_proto::Timestamp;

/// Conditions on alerts, all of which must hold. Empty: every alert.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Created strictly after this time (`alertCreationTime gt ...`).
    pub created_after: Option<Timestamp>,
    /// Any of these statuses (`New`, `InProgress`, `Resolved`, `Unknown`).
    pub statuses: Vec<String>,
    /// Any of these severities (`UnSpecified`, `Informational`, `Low`, `Medium`, `High`).
    pub severities: Vec<String>,
    /// On this machine (its machine id).
    pub machine_id: Option<String>,
    /// A further OData condition of the caller's, as written.
    pub extra: Option<String>,
}

impl AlertFilter {
    /// `alertCreationTime gt 2026-12-07T09:30:00Z and status in ('New','InProgress') and
    /// ...`, or `None` when there is no condition.
    pub fn to_odata(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(t) = self.created_after {
            parts.push(format!("alertCreationTime gt {t}"));
        }
        if let Some(p) = any_of("status", &self.statuses) {
            parts.push(p);
        }
        if let Some(p) = any_of("severity", &self.severities) {
            parts.push(p);
        }
        if let Some(id) = &self.machine_id {
            parts.push(format!("machineId eq {}", odata_string(id)));
        }
        if let Some(extra) = self.extra.as_deref().map(str::trim) {
            if !extra.is_empty() {
                // Parenthesised, so an `or` in it cannot escape the other conditions.
                parts.push(format!("({extra})"));
            }
        }
        (!parts.is_empty()).then(|| parts.join(" and "))
    }
}

/// `field eq 'a'` for one value, `field in ('a','b')` for several (duplicates dropped).
fn any_of(field: &str, values: &[String]) -> Option<String> {
    let mut distinct: Vec<&String> = Vec::new();
    for v in values {
        if !distinct.contains(&v) {
            distinct.push(v);
        }
    }
    match distinct.as_slice() {
        [] => None,
        [one] => Some(format!("{field} eq {}", odata_string(one))),
        many => Some(format!(
            "{field} in ({})",
            many.iter()
                .map(|v| odata_string(v))
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
}

/// An OData string literal: in single quotes, a quote inside doubled (`'O''Brien'`).
pub fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_condition_is_no_filter() {
        assert_eq!(AlertFilter::default().to_odata(), None);
        let blank = AlertFilter {
            extra: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(blank.to_odata(), None);
    }

    #[test]
    fn conditions_are_joined_with_and() {
        let f = AlertFilter {
            created_after: Timestamp::parse("2026-12-07T09:30:00+01:00"),
            statuses: vec!["New".into(), "InProgress".into(), "New".into()],
            severities: vec!["High".into()],
            machine_id: Some("ab".repeat(20)),
            extra: Some("category eq 'Execution' or category eq 'Malware'".into()),
        };
        assert_eq!(
            f.to_odata().unwrap(),
            format!(
                "alertCreationTime gt 2026-12-07T08:30:00Z and status in ('New','InProgress') \
                 and severity eq 'High' and machineId eq '{}' \
                 and (category eq 'Execution' or category eq 'Malware')",
                "ab".repeat(20)
            )
        );
        let one = AlertFilter {
            statuses: vec!["Resolved".into()],
            ..Default::default()
        };
        assert_eq!(one.to_odata().unwrap(), "status eq 'Resolved'");
    }

    #[test]
    fn quotes_are_doubled_in_values() {
        assert_eq!(odata_string("O'Brien"), "'O''Brien'");
        assert_eq!(odata_string("''"), "''''''");
        let f = AlertFilter {
            statuses: vec!["it's".into(), "New".into()],
            machine_id: Some("a' or 1 eq 1 or 'b".into()),
            ..Default::default()
        };
        assert_eq!(
            f.to_odata().unwrap(),
            "status in ('it''s','New') and machineId eq 'a'' or 1 eq 1 or ''b'"
        );
    }
}
