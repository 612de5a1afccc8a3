//! The access sections of the config file: `[[auth.issuers]]`, `[[rbac.roles]]` and
//! `[[device_groups]]`, read into the server's [`AccessSpec`] with the line of each
//! entry, so that a refusal (here or when the server resolves tenants) names the line.

use std::path::{Path, PathBuf};

use appfence_core::rbac::DeviceRule;
use appfence_proto::Secret;
use appfence_server::access::{
    AccessSpec, ConsoleClientSpec, DeviceGroupSpec, IssuerSpec, RoleSpec,
};
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
    /// Console sign-in through this issuer: the console's client id there.
    pub console_client_id: Option<String>,
    /// A confidential client's secret, in the file or (better) in a file of its own.
    pub console_client_secret: Option<Secret>,
    pub console_client_secret_file: Option<PathBuf>,
    /// The sign-in button's label.
    pub display_name: Option<String>,
    pub console_scopes: Option<String>,
}

impl IssuerFile {
    /// The console client, if one is declared; the secret file is read here, so a
    /// reload reads it again.
    fn console(&self) -> Result<Option<ConsoleClientSpec>, String> {
        let Some(client_id) = &self.console_client_id else {
            let stray = [
                (
                    "console_client_secret",
                    self.console_client_secret.is_some(),
                ),
                (
                    "console_client_secret_file",
                    self.console_client_secret_file.is_some(),
                ),
                ("display_name", self.display_name.is_some()),
                ("console_scopes", self.console_scopes.is_some()),
            ];
            return match stray.iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(format!(
                    "{key} is only for console sign-in, which needs console_client_id"
                )),
                None => Ok(None),
            };
        };
        let client_secret = match (
            &self.console_client_secret,
            &self.console_client_secret_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(
                    "give console_client_secret or console_client_secret_file, not both".into(),
                )
            }
            (Some(secret), None) => Some(secret.clone()),
            (None, Some(path)) => Some(read_secret_file(path)?),
            (None, None) => None,
        };
        Ok(Some(ConsoleClientSpec {
            client_id: client_id.clone(),
            client_secret,
            display_name: self.display_name.clone(),
            scopes: self.console_scopes.clone(),
        }))
    }
}

/// The secret in `path`, without the line break editors add.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read console_client_secret_file {}: {e}",
            path.display()
        )
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.trim().is_empty() {
        return Err(format!(
            "console_client_secret_file {} is empty",
            path.display()
        ));
    }
    Ok(Secret::new(secret))
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
            let at = line(span);
            let console = i.console().map_err(|e| {
                format!(
                    "line {}: issuer '{}': {e}",
                    at.unwrap_or_default(),
                    i.issuer
                )
            })?;
            Ok(IssuerSpec {
                line: at,
                issuer: i.issuer.clone(),
                audiences: i.audiences.clone(),
                jwks_uri: i.jwks_uri.clone(),
                tenant: i.tenant.clone(),
                console,
            })
        })
        .collect::<Result<_, String>>()?;
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

    const CONSOLE: &str = r#"listen = "127.0.0.1:9000"

[[auth.issuers]]
issuer = "https://login.example/t/v2.0"
audiences = ["api://appfence"]
console_client_id = "console-app"
console_client_secret = "s3cret"
display_name = "Contoso"
console_scopes = "openid profile"

[[auth.issuers]]
issuer = "https://idp.example/realms/corp"
audiences = ["api://appfence"]
"#;

    #[test]
    fn console_sign_in_settings_are_read_per_issuer() {
        let spec = FileConfig::parse(CONSOLE).unwrap().access;
        let console = spec.issuers[0].console.as_ref().unwrap();
        assert_eq!(console.client_id, "console-app");
        assert_eq!(console.client_secret.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(console.display_name.as_deref(), Some("Contoso"));
        assert_eq!(console.scopes.as_deref(), Some("openid profile"));
        assert!(spec.issuers[1].console.is_none(), "API tokens only");
        // The secret never shows in a debug rendering of the spec.
        assert!(!format!("{spec:?}").contains("s3cret"));

        // A secret file: read at load, without its line break.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.secret");
        std::fs::write(&path, "from-a-file\n").unwrap();
        let text = CONSOLE.replace(
            r#"console_client_secret = "s3cret""#,
            &format!("console_client_secret_file = {:?}", path.to_str().unwrap()),
        );
        let spec = FileConfig::parse(&text).unwrap().access;
        let console = spec.issuers[0].console.as_ref().unwrap();
        assert_eq!(
            console.client_secret.as_ref().unwrap().expose(),
            "from-a-file"
        );
        // A public client: no secret; the defaults come later.
        let public = CONSOLE
            .replace("console_client_secret = \"s3cret\"\n", "")
            .replace("display_name = \"Contoso\"\n", "")
            .replace("console_scopes = \"openid profile\"\n", "");
        let spec = FileConfig::parse(&public).unwrap().access;
        let console = spec.issuers[0].console.as_ref().unwrap();
        assert_eq!(
            (
                &console.client_secret,
                &console.display_name,
                &console.scopes
            ),
            (&None, &None, &None)
        );
    }

    #[test]
    fn bad_console_settings_name_the_line() {
        let issuer = "line 3: issuer 'https://login.example/t/v2.0'";
        let no_client = CONSOLE.replace("console_client_id = \"console-app\"\n", "");
        assert_eq!(
            FileConfig::parse(&no_client).unwrap_err(),
            format!("{issuer}: console_client_secret is only for console sign-in, which needs console_client_id")
        );
        let both = CONSOLE.replace(
            "display_name",
            "console_client_secret_file = \"/nonexistent\"\ndisplay_name",
        );
        assert_eq!(
            FileConfig::parse(&both).unwrap_err(),
            format!("{issuer}: give console_client_secret or console_client_secret_file, not both")
        );
        let missing = CONSOLE.replace(
            r#"console_client_secret = "s3cret""#,
            r#"console_client_secret_file = "/nonexistent/console.secret""#,
        );
        let err = FileConfig::parse(&missing).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{issuer}: cannot read console_client_secret_file /nonexistent/console.secret: "
            )),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let text = CONSOLE.replace(
            r#"console_client_secret = "s3cret""#,
            &format!("console_client_secret_file = {:?}", empty.to_str().unwrap()),
        );
        assert!(FileConfig::parse(&text).unwrap_err().ends_with("is empty"));
        // Values the server checks when it resolves the spec, also with the line.
        let tenants = [appfence_core::Tenant {
            id: "t".into(),
            name: "t".into(),
        }];
        let resolve = |text: &str| {
            appfence_server::access::resolve(&FileConfig::parse(text).unwrap().access, &tenants)
        };
        let policy = resolve(CONSOLE).unwrap();
        assert_eq!(
            policy.issuers[0].console.as_ref().unwrap().display_name,
            "Contoso"
        );
        assert_eq!(
            resolve(&CONSOLE.replace("\"openid profile\"", "\"profile email\"")).unwrap_err(),
            format!("{issuer}: console_scopes must include openid (OpenID Connect sign-in)")
        );
        assert_eq!(
            resolve(&CONSOLE.replace("\"console-app\"", "\" \"")).unwrap_err(),
            format!("{issuer}: console_client_id must not be empty")
        );
        assert_eq!(
            resolve(&CONSOLE.replace("\"Contoso\"", "\"\"")).unwrap_err(),
            format!("{issuer}: display_name must not be empty")
        );
        // A typo in a key is refused with its line.
        let typo = CONSOLE.replace("console_scopes", "console_scope");
        let err = FileConfig::parse(&typo).unwrap_err();
        assert!(
            err.contains("line 9") && err.contains("console_scope"),
            "{err}"
        );
    }
}
