//! The access sections of the config file: `[[auth.issuers]]`, `[[rbac.roles]]` and
//! `[[device_groups]]`, read into the server's [`AccessSpec`] with the line of each
//! entry, so that a refusal (here or when the server resolves tenants) names the line.

use appfence_core::rbac::DeviceRule;
use appfence_server::access::{AccessSpec, DeviceGroupSpec, IssuerSpec, RoleSpec};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    #[serde(default)]
    pub issuers: Vec<Spanned<IssuerFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub tenant: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacFile {
    #[serde(default)]
    pub roles: Vec<Spanned<RoleFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    pub name: String,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceGroupFile {
    pub name: String,
    pub rank: u32,
    pub id: Option<i64>,
    #[serde(rename = "match")]
    pub rule: MatchFile,
    #[serde(default)]
    pub user_groups: Vec<String>,
    pub tenant: Option<String>,
}

/// `match = { name_prefix = "srv-" }`, `{ tag = "prod" }` or `{ os_platform = "Linux" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub name_prefix: Option<String>,
    pub tag: Option<String>,
    pub os_platform: Option<String>,
}

impl MatchFile {
    fn rule(&self) -> Result<DeviceRule, String> {
        let rules: Vec<DeviceRule> = [
            self.name_prefix.clone().map(DeviceRule::NamePrefix),
            self.tag.clone().map(DeviceRule::Tag),
            self.os_platform.clone().map(DeviceRule::OsPlatform),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[DeviceRule; 1]>::try_from(rules) {
            Ok([rule]) => match &rule {
                DeviceRule::NamePrefix(v) | DeviceRule::Tag(v) | DeviceRule::OsPlatform(v)
                    if v.trim().is_empty() =>
                {
                    Err("the match value must not be empty".into())
                }
                _ => Ok(rule),
            },
            Err(_) => Err("match must hold exactly one of name_prefix, tag or os_platform".into()),
        }
    }
}

/// The 1-based line of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The access spec of a parsed file; `text` is the file's text, for line numbers.
pub fn access_spec(
    text: &str,
    auth: Option<&AuthFile>,
    rbac: Option<&RbacFile>,
    device_groups: &[Spanned<DeviceGroupFile>],
) -> Result<AccessSpec, String> {
    let line = |s: std::ops::Range<usize>| Some(line_of(text, s.start));
    let issuers = auth
        .map(|a| a.issuers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|i| {
            let (span, i) = (i.span(), i.get_ref());
            IssuerSpec {
                line: line(span),
                issuer: i.issuer.clone(),
                audiences: i.audiences.clone(),
                jwks_uri: i.jwks_uri.clone(),
                tenant: i.tenant.clone(),
            }
        })
        .collect();
    let roles = rbac
        .map(|r| r.roles.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let (span, r) = (r.span(), r.get_ref());
            RoleSpec {
                line: line(span),
                name: r.name.clone(),
                permissions: r.permissions.clone(),
                user_groups: r.user_groups.clone(),
                tenant: r.tenant.clone(),
            }
        })
        .collect();
    let device_groups = device_groups
        .iter()
        .map(|g| {
            let (span, g) = (g.span(), g.get_ref());
            let at = line(span);
            let rule = g.rule.rule().map_err(|e| {
                format!(
                    "line {}: device group '{}': {e}",
                    at.unwrap_or_default(),
                    g.name
                )
            })?;
            Ok(DeviceGroupSpec {
                line: at,
                name: g.name.clone(),
                rank: g.rank,
                id: g.id,
                rule,
                user_groups: g.user_groups.clone(),
                tenant: g.tenant.clone(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(AccessSpec {
        issuers,
        roles,
        device_groups,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::FileConfig;
    use appfence_core::rbac::DeviceRule;

    const TEXT: &str = r#"listen = "127.0.0.1:9000"

[[auth.issuers]]
issuer = "https://idp.example/realms/corp"
audiences = ["api://appfence"]

[[rbac.roles]]
name = "Tier 2"
permissions = ["Active remediation actions", "View data"]
user_groups = ["g1"]

[[device_groups]]
name = "Servers"
rank = 1
match = { name_prefix = "srv-" }

[[device_groups]]
name = "Prod"
rank = 2
id = 77
match = { tag = "prod" }
user_groups = ["g2"]
tenant = "t"
"#;

    #[test]
    fn sections_become_a_spec_with_lines() {
        let spec = FileConfig::parse(TEXT).unwrap().access;
        assert_eq!(spec.issuers[0].line, Some(3));
        assert_eq!(spec.issuers[0].audiences, ["api://appfence"]);
        assert_eq!(spec.roles[0].line, Some(7));
        assert_eq!(spec.roles[0].permissions.len(), 2);
        assert_eq!(spec.device_groups[0].line, Some(12));
        assert_eq!(
            spec.device_groups[0].rule,
            DeviceRule::NamePrefix("srv-".into())
        );
        assert_eq!(spec.device_groups[1].line, Some(17));
        assert_eq!(spec.device_groups[1].id, Some(77));
        assert_eq!(spec.device_groups[1].tenant.as_deref(), Some("t"));
        assert!(FileConfig::parse("").unwrap().access.roles.is_empty());
    }

    #[test]
    fn bad_sections_name_the_line() {
        let two_rules = TEXT.replace(
            r#"match = { tag = "prod" }"#,
            r#"match = { tag = "prod", os_platform = "Linux" }"#,
        );
        assert_eq!(
            FileConfig::parse(&two_rules).unwrap_err(),
            "line 17: device group 'Prod': match must hold exactly one of name_prefix, tag or os_platform"
        );
        let empty = TEXT.replace(r#"{ name_prefix = "srv-" }"#, r#"{ name_prefix = " " }"#);
        assert!(FileConfig::parse(&empty)
            .unwrap_err()
            .starts_with("line 12: device group 'Servers': the match value must not be empty"));
        // Unknown keys are refused by the TOML reader, with the line.
        let typo = TEXT.replace("user_groups = [\"g1\"]", "user_group = [\"g1\"]");
        let err = FileConfig::parse(&typo).unwrap_err();
        assert!(
            err.contains("line 10") && err.contains("user_group"),
            "{err}"
        );
        let bad_match = TEXT.replace("{ tag = \"prod\" }", "{ label = \"prod\" }");
        assert!(FileConfig::parse(&bad_match).unwrap_err().contains("label"));
    }
}
