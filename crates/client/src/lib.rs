//! A typed client for appfence's MDE-compatible API (and so for MDE itself).
//!
//! ```no_run
//! # async fn demo() -> Result<(), appfence_client::ClientError> {
//! use appfence_client::{ClientConfig, MdeClient};
//! let client = MdeClient::new(ClientConfig {
//!     server: "http://127.0.0.1:8080".into(),
//!     tenant: "tenant-guid".into(),
//!     client_id: "client-guid".into(),
//!     client_secret: "secret".into(),
//!     token_url: None,
//!     tls: Default::default(),
//! })?;
//! let action = client.restrict("web-01", "Restrict code execution due to alert 1234").await?;
//! println!("{} is {}", action.id, action.status.as_str());
//! # Ok(()) }
//! ```
//!
//! A person signs in through [`flows`] (browser with PKCE, or a device code); the
//! caller keeps the tokens and hands the client a [`UserSession`]
//! ([`MdeClient::for_session`]).

mod alert_filter;
mod encode;
mod error;
pub mod flows;
mod session;
mod token;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use appfence_proto::alert::{AlertBatchUpdate, AlertUpdate};
use appfence_proto::{
    Alert, Collection, Indicator, IndicatorImportResponse, Machine, MachineAction,
    MachineEnforcement, MachineEvent,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use alert_filter::{odata_string, AlertFilter};
pub use error::ClientError;
pub use session::{TokenFuture, UserSession};
pub use token::MDE_SCOPE;

use session::TokenSource;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080` (the API lives under `/api`).
    pub server: String,
    /// Tenant id (a GUID) for the token endpoint.
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// Token endpoint; defaults to `{server}/{tenant}/oauth2/v2.0/token`.
    pub token_url: Option<String>,
    /// How the server is verified, and whether plain HTTP off loopback is allowed.
    pub tls: appfence_tls::client::ClientTls,
}

impl ClientConfig {
    pub fn token_url(&self) -> String {
        match &self.token_url {
            Some(url) => url.clone(),
            None => format!(
                "{}/{}/oauth2/v2.0/token",
                self.server.trim_end_matches('/'),
                encode::encode(&self.tenant)
            ),
        }
    }
}

impl fmt::Debug for ClientConfig {
    // The secret must not end up in logs or panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_url", &self.token_url)
            .finish()
    }
}

/// Body of restrict, unrestrict and cancel: PascalCase keys, as MDE requires.
#[derive(Serialize)]
struct ActionBody<'a> {
    #[serde(rename = "Comment", skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
}

/// The body of Submit or Update Indicator, camelCase as MDE documents it. appfence
/// accepts `FileSha256` indicators with the file actions (`Allowed`, `Block`,
/// `AlertAndBlock`, `BlockAndRemediate`, `Audit`, `Alert`); see
/// [`NewIndicator::allow_sha256`] and [`NewIndicator::file_sha256`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewIndicator {
    pub indicator_value: String,
    pub indicator_type: String,
    pub action: String,
    pub title: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// RFC 3339, e.g. `2030-01-01T00:00:00Z`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generate_alert: Option<bool>,
    /// Device groups; empty: every device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rbac_group_names: Vec<String>,
}

impl NewIndicator {
    /// An indicator with this action for the file with this SHA-256.
    pub fn file_sha256(sha256: &str, action: &str, title: &str, description: &str) -> Self {
        NewIndicator {
            action: action.to_string(),
            ..Self::allow_sha256(sha256, title, description)
        }
    }

    /// Lets the file with this SHA-256 run on restricted devices.
    pub fn allow_sha256(sha256: &str, title: &str, description: &str) -> Self {
        NewIndicator {
            indicator_value: sha256.to_string(),
            indicator_type: "FileSha256".into(),
            action: "Allowed".into(),
            title: title.to_string(),
            description: description.to_string(),
            application: None,
            expiration_time: None,
            severity: None,
            generate_alert: None,
            rbac_group_names: Vec::new(),
        }
    }
}

/// The HTTP client the API client and the sign-in flows use: `tls`'s trust, a
/// 10-second connect and a 60-second request timeout.
pub fn http_client(tls: &appfence_tls::client::ClientTls) -> Result<reqwest::Client> {
    let rustls = tls.rustls_config().map_err(ClientError::Transport)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(rustls)
        .user_agent(concat!("appfence-client/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(ClientError::transport)
}

/// An http(s) URL, or why not.
fn check_http_url(what: &str, url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ClientError::Transport(format!("invalid {what} URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ClientError::Transport(format!(
            "invalid {what} URL {url:?}: the scheme must be http or https"
        )));
    }
    Ok(())
}

/// The client. Cheap to share behind an `Arc`; the token is fetched on first use and
/// reused by every call until shortly before it expires.
pub struct MdeClient {
    http: reqwest::Client,
    base: String,
    source: TokenSource,
}

impl fmt::Debug for MdeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MdeClient")
            .field("base", &self.base)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl MdeClient {
    /// A client with an application's credentials (client credentials grant).
    pub fn new(config: ClientConfig) -> Result<Self> {
        for url in [&config.server, &config.token_url()] {
            config
                .tls
                .check_server_url(url)
                .map_err(ClientError::Transport)?;
        }
        let http = http_client(&config.tls)?;
        Self::with_http(config, http)
    }

    /// Uses a caller-supplied `reqwest::Client` (proxies, timeouts, TLS set up by the caller).
    pub fn with_http(config: ClientConfig, http: reqwest::Client) -> Result<Self> {
        let base = config.server.trim_end_matches('/').to_string();
        check_http_url("server", &base)?;
        check_http_url("token", &config.token_url())?;
        Ok(MdeClient {
            http,
            source: TokenSource::client_credentials(
                config.token_url(),
                config.client_id,
                config.client_secret,
            ),
            base,
        })
    }

    /// A client acting as the person signed in to `session`.
    pub fn for_session(
        server: &str,
        tls: &appfence_tls::client::ClientTls,
        session: Arc<dyn UserSession>,
    ) -> Result<Self> {
        tls.check_server_url(server)
            .map_err(ClientError::Transport)?;
        let base = server.trim_end_matches('/').to_string();
        check_http_url("server", &base)?;
        Ok(MdeClient {
            http: http_client(tls)?,
            base,
            source: TokenSource::User(session),
        })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A valid access token, from the cache or freshly fetched.
    pub async fn access_token(&self) -> Result<String> {
        Ok(self.source.token(&self.http, None).await?.0)
    }

    /// `POST /api/machines/{machine}/restrictCodeExecution`. `machine` is a machine id,
    /// an `aadDeviceId` or a computer DNS name.
    pub async fn restrict(&self, machine: &str, comment: &str) -> Result<MachineAction> {
        self.machine_action(machine, "restrictCodeExecution", comment)
            .await
    }

    /// `POST /api/machines/{machine}/unrestrictCodeExecution`.
    pub async fn unrestrict(&self, machine: &str, comment: &str) -> Result<MachineAction> {
        self.machine_action(machine, "unrestrictCodeExecution", comment)
            .await
    }

    /// `POST /api/machines/{machine}/offboard`: the device lifts its enforcement, forgets
    /// its credential and stops; the machine then shows `onboardingStatus` `Offboarded`.
    pub async fn offboard(&self, machine: &str, comment: &str) -> Result<MachineAction> {
        self.machine_action(machine, "offboard", comment).await
    }

    /// `POST /api/machines/{machine}/{action}` with `{"Comment": comment}`.
    async fn machine_action(
        &self,
        machine: &str,
        action: &str,
        comment: &str,
    ) -> Result<MachineAction> {
        let url = format!(
            "{}/api/machines/{}/{action}",
            self.base,
            encode::encode(machine)
        );
        self.send(
            Method::POST,
            &url,
            Some(&ActionBody {
                comment: Some(comment),
            }),
        )
        .await
    }

    /// `GET /api/machineactions/{id}`.
    pub async fn get_action(&self, id: &str) -> Result<MachineAction> {
        let url = format!("{}/api/machineactions/{}", self.base, encode::encode(id));
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// `GET /api/machineactions` with an optional OData `$filter` and `$top`: one page.
    pub async fn list_actions(
        &self,
        filter: Option<&str>,
        top: Option<u32>,
    ) -> Result<Collection<MachineAction>> {
        let url = format!(
            "{}/api/machineactions{}",
            self.base,
            list_query(filter, top)
        );
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// Every matching action, following `@odata.nextLink` to the end.
    pub async fn list_actions_all(
        &self,
        filter: Option<&str>,
    ) -> Result<Collection<MachineAction>> {
        let first = self.list_actions(filter, None).await?;
        self.follow(first).await
    }

    /// `POST /api/machineactions/{id}/cancel`, with an optional comment.
    pub async fn cancel_action(&self, id: &str, comment: Option<&str>) -> Result<MachineAction> {
        let url = format!(
            "{}/api/machineactions/{}/cancel",
            self.base,
            encode::encode(id)
        );
        self.send(Method::POST, &url, Some(&ActionBody { comment }))
            .await
    }

    /// `GET /api/machines` with an optional OData `$filter` and `$top`: one page.
    pub async fn list_machines(
        &self,
        filter: Option<&str>,
        top: Option<u32>,
    ) -> Result<Collection<Machine>> {
        let url = format!("{}/api/machines{}", self.base, list_query(filter, top));
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// Every matching machine, following `@odata.nextLink` to the end.
    pub async fn list_machines_all(&self, filter: Option<&str>) -> Result<Collection<Machine>> {
        let first = self.list_machines(filter, None).await?;
        self.follow(first).await
    }

    /// `GET /api/machines/{id}`: by machine id, `aadDeviceId` or computer DNS name.
    pub async fn get_machine(&self, id: &str) -> Result<Machine> {
        let url = format!("{}/api/machines/{}", self.base, encode::encode(id));
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// `GET /api/machines/findbyip(ip='{ip}',timestamp={at})`: the machines seen with the
    /// internal address within 15 minutes either side of `at` (a UTC time).
    pub async fn find_machines_by_ip(&self, ip: &str, at: &str) -> Result<Collection<Machine>> {
        // The call is written as MDE documents it; only its values are escaped.
        let url = format!(
            "{}/api/machines/findbyip(ip='{}',timestamp={})",
            self.base,
            encode::encode(ip),
            encode::encode(at)
        );
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// `GET /api/machines/findbytag?tag=...&useStartsWithFilter=...`.
    pub async fn find_machines_by_tag(
        &self,
        tag: &str,
        prefix: bool,
    ) -> Result<Collection<Machine>> {
        let url = format!(
            "{}/api/machines/findbytag{}",
            self.base,
            encode::query(&[
                ("tag", tag.to_string()),
                ("useStartsWithFilter", prefix.to_string())
            ])
        );
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// `POST /api/machines/{id}/tags`: adds or removes one tag; the machine after it.
    pub async fn tag_machine(&self, machine: &str, tag: &str, add: bool) -> Result<Machine> {
        #[derive(Serialize)]
        struct TagBody<'a> {
            #[serde(rename = "Value")]
            value: &'a str,
            #[serde(rename = "Action")]
            action: &'a str,
        }
        let url = format!(
            "{}/api/machines/{}/tags",
            self.base,
            encode::encode(machine)
        );
        let body = TagBody {
            value: tag,
            action: if add { "Add" } else { "Remove" },
        };
        self.send(Method::POST, &url, Some(&body)).await
    }

    /// `POST /api/indicators`: creates the indicator, or updates the one with the same
    /// value and type.
    pub async fn submit_indicator(&self, indicator: &NewIndicator) -> Result<Indicator> {
        let url = format!("{}/api/indicators", self.base);
        self.send(Method::POST, &url, Some(indicator)).await
    }

    /// `POST /api/indicators/import`: up to 500 indicators (each as MDE's Indicator body,
    /// e.g. from a CSV); a result per indicator, in order.
    pub async fn import_indicators(
        &self,
        indicators: &[serde_json::Value],
    ) -> Result<IndicatorImportResponse> {
        let url = format!("{}/api/indicators/import", self.base);
        let body = serde_json::json!({ "Indicators": indicators });
        self.send(Method::POST, &url, Some(&body)).await
    }

    /// `PATCH /api/machines/{id}` (MDE's Update machine): `tags` replaces the machine's
    /// tags; `device_value` is `Normal`, `Low` or `High`. The machine after it.
    pub async fn update_machine(
        &self,
        machine: &str,
        tags: Option<&[String]>,
        device_value: Option<&str>,
    ) -> Result<Machine> {
        let url = format!("{}/api/machines/{}", self.base, encode::encode(machine));
        let mut body = serde_json::Map::new();
        if let Some(tags) = tags {
            body.insert("machineTags".into(), serde_json::json!(tags));
        }
        if let Some(value) = device_value {
            body.insert("deviceValue".into(), serde_json::json!(value));
        }
        self.send(Method::PATCH, &url, Some(&body)).await
    }

    /// `GET /api/indicators` with an optional OData `$filter` and `$top`: one page.
    pub async fn list_indicators(
        &self,
        filter: Option<&str>,
        top: Option<u32>,
    ) -> Result<Collection<Indicator>> {
        let url = format!("{}/api/indicators{}", self.base, list_query(filter, top));
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// Every matching indicator, following `@odata.nextLink` to the end.
    pub async fn list_indicators_all(&self, filter: Option<&str>) -> Result<Collection<Indicator>> {
        let first = self.list_indicators(filter, None).await?;
        self.follow(first).await
    }

    /// `DELETE /api/indicators/{id}`.
    pub async fn delete_indicator(&self, id: &str) -> Result<()> {
        let url = format!("{}/api/indicators/{}", self.base, encode::encode(id));
        self.send_for_bytes(Method::DELETE, &url, None::<&()>)
            .await
            .map(drop)
    }

    /// `GET /api/machines/{machine}/events` (appfence extension): the machine's denied
    /// executions, newest first.
    pub async fn machine_events(
        &self,
        machine: &str,
        top: Option<u32>,
    ) -> Result<Collection<MachineEvent>> {
        let url = format!(
            "{}/api/machines/{}/events{}",
            self.base,
            encode::encode(machine),
            list_query(None, top)
        );
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// `GET /api/machines/{machine}/enforcement` (appfence extension): the agent's
    /// reported enforcement state next to the desired one.
    pub async fn machine_enforcement(&self, machine: &str) -> Result<MachineEnforcement> {
        let url = format!(
            "{}/api/machines/{}/enforcement",
            self.base,
            encode::encode(machine)
        );
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// `GET /api/alerts` with an optional OData `$filter` and `$top`, newest first: one
    /// page. `expand_evidence` asks for `$expand=evidence` (otherwise `evidence` is
    /// empty).
    pub async fn list_alerts(
        &self,
        filter: Option<&str>,
        top: Option<u32>,
        expand_evidence: bool,
    ) -> Result<Collection<Alert>> {
        let mut pairs = list_pairs(filter, top);
        if expand_evidence {
            pairs.push(("$expand", "evidence".to_string()));
        }
        let url = format!("{}/api/alerts{}", self.base, encode::query(&pairs));
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// Every matching alert, following `@odata.nextLink` to the end.
    pub async fn list_alerts_all(
        &self,
        filter: Option<&str>,
        expand_evidence: bool,
    ) -> Result<Collection<Alert>> {
        let first = self.list_alerts(filter, None, expand_evidence).await?;
        self.follow(first).await
    }

    /// `GET /api/alerts/{id}`: the alert with its evidence.
    pub async fn get_alert(&self, id: &str) -> Result<Alert> {
        let url = format!("{}/api/alerts/{}", self.base, encode::encode(id));
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// `PATCH /api/alerts/{id}` (MDE's Update alert): the alert after it.
    pub async fn update_alert(&self, id: &str, update: &AlertUpdate) -> Result<Alert> {
        let url = format!("{}/api/alerts/{}", self.base, encode::encode(id));
        self.send(Method::PATCH, &url, Some(update)).await
    }

    /// `POST /api/alerts/batchUpdate`: the same change to several alerts, all or none.
    pub async fn batch_update_alerts(&self, batch: &AlertBatchUpdate) -> Result<()> {
        let url = format!("{}/api/alerts/batchUpdate", self.base);
        self.send_for_bytes(Method::POST, &url, Some(batch))
            .await
            .map(drop)
    }

    /// `GET /api/machines/{machine}/alerts`: the machine's alerts, every page.
    pub async fn machine_alerts(&self, machine: &str) -> Result<Collection<Alert>> {
        let url = format!(
            "{}/api/machines/{}/alerts",
            self.base,
            encode::encode(machine)
        );
        let first = self.send(Method::GET, &url, None::<&()>).await?;
        self.follow(first).await
    }

    /// `GET /api/alerts/{id}/machine`: the machine the alert was raised on.
    pub async fn alert_machine(&self, id: &str) -> Result<Machine> {
        let url = format!("{}/api/alerts/{}/machine", self.base, encode::encode(id));
        self.send(Method::GET, &url, None::<&()>).await
    }

    /// Appends the pages behind `@odata.nextLink` to `first`; the result has no next link.
    async fn follow<T: DeserializeOwned>(&self, mut all: Collection<T>) -> Result<Collection<T>> {
        let mut seen = HashSet::new();
        while let Some(next) = all.odata_next_link.take() {
            // A server that hands out the same link twice would keep us here forever.
            if !seen.insert(next.clone()) {
                return Err(ClientError::Decode(format!(
                    "the server returned the same @odata.nextLink twice: {next}"
                )));
            }
            let page: Collection<T> = self.send(Method::GET, &next, None::<&()>).await?;
            all.value.extend(page.value);
            all.odata_next_link = page.odata_next_link;
        }
        Ok(all)
    }

    async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let bytes = self.send_for_bytes(method.clone(), url, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode(format!("unexpected response to {method} {url}: {e}")))
    }

    /// The body of a successful response (empty for `204 No Content`).
    async fn send_for_bytes<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<Vec<u8>> {
        let (mut token, mut fresh) = self.source.token(&self.http, None).await?;
        loop {
            let mut req = self.http.request(method.clone(), url).bearer_auth(&token);
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.map_err(ClientError::transport)?;
            let status = resp.status();
            // A cached token the server no longer accepts (e.g. its keys were rotated):
            // a 401 means nothing was done, so one retry with a new token is safe.
            if status == StatusCode::UNAUTHORIZED && !fresh {
                (token, fresh) = self.source.token(&self.http, Some(&token)).await?;
                continue;
            }
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = resp.bytes().await.map_err(ClientError::transport)?;
            if !status.is_success() {
                return Err(ClientError::from_response(status, retry_after, &bytes));
            }
            return Ok(bytes.to_vec());
        }
    }
}

fn list_query(filter: Option<&str>, top: Option<u32>) -> String {
    encode::query(&list_pairs(filter, top))
}

fn list_pairs(filter: Option<&str>, top: Option<u32>) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    if let Some(f) = filter {
        pairs.push(("$filter", f.to_string()));
    }
    if let Some(t) = top {
        pairs.push(("$top", t.to_string()));
    }
    pairs
}

#[cfg(test)]
mod tests;
