//! Which audiences and issuers the API accepts. Clients written for MDE request a token
//! for one of MDE's audiences; self-hosted clients may name the server's own URL. All
//! of them mean "this API".

use appfence_core::ids::truncate;

/// The audiences of the real service, as clients request them.
pub const MDE_AUDIENCES: [&str; 3] = [
    "https://api.securitycenter.microsoft.com",
    "https://api.security.microsoft.com",
    "https://api.securitycenter.windows.com",
];

/// Version of the token endpoint a token came from; it decides the issuer's form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenVersion {
    V1,
    V2,
}

impl TokenVersion {
    /// The `ver` claim.
    pub fn claim(self) -> &'static str {
        match self {
            TokenVersion::V1 => "1.0",
            TokenVersion::V2 => "2.0",
        }
    }
}

/// The accepted audiences and issuers of one server, derived from its public URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    public_url: String,
}

/// Why a v2 `scope` parameter names no acceptable audience.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeError(pub String);

impl TokenPolicy {
    pub fn new(public_url: &str) -> Self {
        TokenPolicy {
            public_url: public_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Every accepted audience in canonical form: the public URL first.
    pub fn audiences(&self) -> Vec<&str> {
        std::iter::once(self.public_url.as_str())
            .chain(MDE_AUDIENCES)
            .collect()
    }

    /// The canonical form of `requested` if it is an accepted audience: trailing
    /// slashes do not matter, and neither does ASCII case (scheme and host are
    /// case-insensitive, and none of the accepted URLs has a path).
    pub fn accept_audience(&self, requested: &str) -> Option<&str> {
        let wanted = requested.trim().trim_end_matches('/');
        if wanted.is_empty() {
            return None;
        }
        self.audiences()
            .into_iter()
            .find(|a| a.eq_ignore_ascii_case(wanted))
    }

    /// The audience of a v2 `scope` parameter: exactly one `<audience>/.default`.
    pub fn audience_from_scope(&self, scope: &str) -> Result<&str, ScopeError> {
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        let [only] = scopes.as_slice() else {
            return Err(ScopeError(format!(
                "The scope '{}' must name exactly one resource as '<resource>/.default'",
                truncate(scope, 200)
            )));
        };
        let resource = strip_suffix_ignore_case(only, "/.default").ok_or_else(|| {
            ScopeError(format!(
                "The scope '{}' is not supported: the client credentials grant needs '<resource>/.default'",
                truncate(only, 200)
            ))
        })?;
        self.accept_audience(resource).ok_or_else(|| {
            ScopeError(format!(
                "The scope '{}' names an unknown resource; accepted resources are: {}",
                truncate(only, 200),
                self.audiences().join(", ")
            ))
        })
    }

    /// The issuer of tokens of this tenant and version, as Entra writes it.
    pub fn issuer(&self, tenant_id: &str, version: TokenVersion) -> String {
        match version {
            TokenVersion::V1 => format!("{}/{tenant_id}/", self.public_url),
            TokenVersion::V2 => format!("{}/{tenant_id}/v2.0", self.public_url),
        }
    }

    /// Whether `iss` is one of this server's issuers for the tenant `tid`.
    pub fn accepts_issuer(&self, iss: &str, tid: &str) -> bool {
        [TokenVersion::V1, TokenVersion::V2]
            .into_iter()
            .any(|v| self.issuer(tid, v) == iss)
    }
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let (head, tail) = (s.get(..cut)?, s.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TokenPolicy {
        TokenPolicy::new("http://127.0.0.1:8080/")
    }

    #[test]
    fn audiences_are_normalised() {
        let p = policy();
        assert_eq!(
            p.accept_audience("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            p.accept_audience("http://127.0.0.1:8080/"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            p.accept_audience("https://API.securitycenter.microsoft.com/"),
            Some("https://api.securitycenter.microsoft.com")
        );
        assert_eq!(
            p.accept_audience("https://api.security.microsoft.com"),
            Some("https://api.security.microsoft.com")
        );
        assert_eq!(
            p.accept_audience("https://api.securitycenter.windows.com//"),
            Some("https://api.securitycenter.windows.com")
        );
        assert_eq!(p.accept_audience("https://graph.microsoft.com"), None);
        assert_eq!(
            p.accept_audience("https://api.securitycenter.microsoft.com/api"),
            None
        );
        assert_eq!(p.accept_audience(""), None);
        assert_eq!(p.accept_audience("/"), None);
    }

    #[test]
    fn v2_scopes_need_one_default_scope() {
        let p = policy();
        assert_eq!(
            p.audience_from_scope("https://api.securitycenter.microsoft.com/.default"),
            Ok("https://api.securitycenter.microsoft.com")
        );
        assert_eq!(
            p.audience_from_scope(" http://127.0.0.1:8080/.DEFAULT "),
            Ok("http://127.0.0.1:8080")
        );
        assert!(p
            .audience_from_scope("https://api.securitycenter.microsoft.com")
            .is_err());
        assert!(p
            .audience_from_scope("https://graph.microsoft.com/.default")
            .is_err());
        assert!(p
            .audience_from_scope(
                "https://api.securitycenter.microsoft.com/.default http://127.0.0.1:8080/.default"
            )
            .is_err());
        assert!(p.audience_from_scope("").is_err());
        assert!(p.audience_from_scope("/.default").is_err());
        // Multi-byte characters near the suffix must not panic.
        assert!(p.audience_from_scope("ééééééééé").is_err());
    }

    #[test]
    fn issuers_follow_entra() {
        let p = policy();
        assert_eq!(p.issuer("t", TokenVersion::V1), "http://127.0.0.1:8080/t/");
        assert_eq!(
            p.issuer("t", TokenVersion::V2),
            "http://127.0.0.1:8080/t/v2.0"
        );
        assert!(p.accepts_issuer("http://127.0.0.1:8080/t/", "t"));
        assert!(p.accepts_issuer("http://127.0.0.1:8080/t/v2.0", "t"));
        assert!(!p.accepts_issuer("http://127.0.0.1:8080/u/", "t"));
        assert!(!p.accepts_issuer("https://sts.windows.net/t/", "t"));
        assert!(!p.accepts_issuer("http://127.0.0.1:8080/t", "t"));
    }
}
