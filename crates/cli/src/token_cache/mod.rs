//! The token cache of `appfence login`: one JSON file,
//! `$XDG_CONFIG_HOME/appfence/tokens.json` (else `~/.config/appfence/tokens.json`), in a
//! `0700` directory, `0600`, with one sign-in per server and tenant. It is replaced whole
//! (`private_file`), under an exclusive lock (`lock`) whenever it changes, so that
//! concurrent processes never lose a rotated refresh token.

mod lock;
mod private_file;
mod session;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use appfence_client::flows::UserTokens;
use serde::{Deserialize, Serialize};

use crate::env::{Env, ENV_HOME, ENV_XDG_CONFIG_HOME};
use crate::error::CliError;

pub use lock::CacheLock;
pub use session::CachedSession;

pub const DIR_NAME: &str = "appfence";
pub const FILE_NAME: &str = "tokens.json";
const LOCK_NAME: &str = "tokens.lock";
const FORMAT_VERSION: u32 = 1;
/// An access token is used while it has more than this left; then it is refreshed.
pub const MIN_TIME_LEFT: u64 = 60;
/// The longest a process waits for another's lock: longer than one refresh can take
/// (the HTTP client gives up after 70 s at most).
const LOCK_WAIT: Duration = Duration::from_secs(90);

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A server URL as sign-ins are filed under it: parsed (lower-case scheme and host, no
/// default port) and without a trailing slash.
pub fn normalise_server(server: &str) -> Result<String, CliError> {
    let url = reqwest::Url::parse(server.trim())
        .map_err(|e| CliError::Usage(format!("invalid server URL {server:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CliError::Usage(format!(
            "invalid server URL {server:?}: the scheme must be http or https"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Where the cache is.
#[derive(Clone, Debug)]
pub struct TokenCache {
    dir: PathBuf,
    file: PathBuf,
    lock: PathBuf,
}

impl TokenCache {
    /// `$XDG_CONFIG_HOME/appfence` (an absolute path, as the XDG specification wants),
    /// else `$HOME/.config/appfence`; `None` without either.
    pub fn locate(env: &Env) -> Option<TokenCache> {
        let config_home = env
            .get(ENV_XDG_CONFIG_HOME)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                env.get(ENV_HOME)
                    .map(|home| Path::new(home).join(".config"))
            })?;
        Some(TokenCache::in_dir(config_home.join(DIR_NAME)))
    }

    pub fn in_dir(dir: PathBuf) -> TokenCache {
        TokenCache {
            file: dir.join(FILE_NAME),
            lock: dir.join(LOCK_NAME),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sign-ins; none if there is no cache yet. Readable without the lock, as the
    /// file is only ever replaced whole.
    pub fn load(&self) -> Result<CacheFile, CliError> {
        let Some(bytes) = private_file::read_private(&self.file)? else {
            return Ok(CacheFile::default());
        };
        let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Failed(format!(
                "the token cache {} is damaged ({e}): remove it and run `appfence login` again",
                self.file.display()
            ))
        })?;
        if file.version > FORMAT_VERSION {
            return Err(CliError::Failed(format!(
                "the token cache {} was written by a newer appfence (format {})",
                self.file.display(),
                file.version
            )));
        }
        Ok(file)
    }

    /// Takes the exclusive lock (creating the directory `0700` first if needed).
    pub async fn lock(&self) -> Result<CacheLock, CliError> {
        private_file::ensure_private_dir(&self.dir)?;
        lock::acquire(&self.lock, LOCK_WAIT).await
    }

    /// Replaces the cache with `file`; the lock proves nobody else is changing it.
    pub fn save(&self, _held: &CacheLock, file: &CacheFile) -> Result<(), CliError> {
        private_file::ensure_private_dir(&self.dir)?;
        let mut bytes = serde_json::to_vec_pretty(file)
            .map_err(|e| CliError::Failed(format!("cannot encode the token cache: {e}")))?;
        bytes.push(b'\n');
        private_file::write_private(&self.file, &bytes)
    }

    /// Deletes the cache file; whether there was one.
    pub fn delete(&self, _held: &CacheLock) -> Result<bool, CliError> {
        match std::fs::remove_file(&self.file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CliError::Failed(format!(
                "cannot remove {}: {e}",
                self.file.display()
            ))),
        }
    }
}

/// The file's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheFile {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub sessions: Vec<CachedLogin>,
}

/// One sign-in: a person at a server, in a tenant, through a client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedLogin {
    /// As [`normalise_server`] writes it.
    pub server: String,
    /// The tenant as it was given at sign-in (an id or a name).
    pub tenant: String,
    /// The tenant's id, from the token (`tid`).
    #[serde(default)]
    pub tenant_id: Option<String>,
    pub client_id: String,
    /// Who signed in (`upn` or `preferred_username` of the token).
    pub user: String,
    pub token_endpoint: String,
    pub access_token: String,
    /// When the access token expires, in seconds since the Unix epoch.
    pub expires_at: u64,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl fmt::Debug for CachedLogin {
    // Tokens must not end up in logs or panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedLogin")
            .field("server", &self.server)
            .field("tenant", &self.tenant)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("user", &self.user)
            .field("token_endpoint", &self.token_endpoint)
            .field("access_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl CachedLogin {
    /// Whether the access token has more than [`MIN_TIME_LEFT`] left at `now`.
    pub fn has_time_left(&self, now: u64) -> bool {
        self.expires_at > now.saturating_add(MIN_TIME_LEFT)
    }

    /// Whether this is the sign-in for `server` (normalised) and `tenant` (its name or
    /// id as given at sign-in, or its id; any case). Without a tenant, any of the server.
    pub fn is_for(&self, server: &str, tenant: Option<&str>) -> bool {
        self.server == server
            && tenant.is_none_or(|t| {
                self.tenant.eq_ignore_ascii_case(t)
                    || self
                        .tenant_id
                        .as_deref()
                        .is_some_and(|id| id.eq_ignore_ascii_case(t))
            })
    }

    /// Takes the tokens of a refresh obtained at `now`. A refresh token that was not
    /// rotated stays.
    pub fn renew(&mut self, tokens: UserTokens, now: u64) {
        self.expires_at = now.saturating_add(tokens.expires_in);
        self.access_token = tokens.access_token;
        if tokens.refresh_token.is_some() {
            self.refresh_token = tokens.refresh_token;
        }
    }

    /// `SERVER (tenant T)`, as messages name a sign-in.
    pub fn place(&self) -> String {
        format!("{} (tenant {})", self.server, self.tenant)
    }
}

impl CacheFile {
    /// The index of the sign-in for `server` and `tenant`. Without a tenant, the only
    /// sign-in to the server; several are a usage error that lists them.
    pub fn position(&self, server: &str, tenant: Option<&str>) -> Result<Option<usize>, CliError> {
        let found: Vec<usize> = self
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_for(server, tenant))
            .map(|(i, _)| i)
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            several => Err(CliError::Usage(format!(
                "you are signed in to {server} in several tenants ({}): say which with \
                 --tenant or APPFENCE_TENANT",
                several
                    .iter()
                    .map(|i| self.sessions[*i].tenant.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Files `login`, replacing the sign-in to the same server and tenant.
    pub fn upsert(&mut self, login: CachedLogin) {
        self.version = FORMAT_VERSION;
        self.sessions.retain(|s| {
            !(s.is_for(&login.server, Some(&login.tenant))
                || login
                    .tenant_id
                    .as_deref()
                    .is_some_and(|id| s.is_for(&login.server, Some(id))))
        });
        self.sessions.push(login);
    }

    /// Removes the sign-ins for `server` and `tenant` (without a tenant, every one to
    /// the server) and returns them.
    pub fn remove(&mut self, server: &str, tenant: Option<&str>) -> Vec<CachedLogin> {
        let (gone, kept) = std::mem::take(&mut self.sessions)
            .into_iter()
            .partition(|s| s.is_for(server, tenant));
        self.sessions = kept;
        gone
    }
}

#[cfg(test)]
mod tests;
