//! `keys list|rotate|retire`: the token signing keys, on the data directory's database
//! directly. Running servers re-read the keys every `key_refresh_interval`, so a
//! rotation or a retirement reaches every replica within that bound.

use std::process::ExitCode;

use appfence_core::records::SigningKey;
use appfence_core::signing_keys::{state_at, KeyState};
use appfence_core::{Clock, SystemClock};
use appfence_proto::Timestamp;
use appfence_server::oauth::keyring::{self, KeyRing};
use appfence_server::ServerConfig;
use serde::Serialize;

use super::{open_offline, Ctx};
use crate::args::{KeysCommand, OfflineArgs, OutputFormat};
use crate::error::CliError;
use crate::output::{self, Table};
use crate::store::OpenStore;

/// The actor recorded in the audit log for a retirement from the command line.
const RETIRE_ACTOR: &str = "appfence keys retire";

pub async fn run(cmd: &KeysCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        KeysCommand::List(args) => list(&args.offline, ctx).await,
        KeysCommand::Rotate(args) => rotate(&args.offline, ctx).await,
        KeysCommand::Retire(args) => retire(&args.offline, &args.kid, ctx).await,
    }
}

/// A key as `keys list --output json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub kid: String,
    /// `Signing`, `Next`, `Verifying` or `Retired`.
    pub state: &'static str,
    pub created: Timestamp,
    pub activates: Timestamp,
    pub verify_until: Option<Timestamp>,
    pub retired: Option<Timestamp>,
    /// The key-encryption key that sealed it.
    pub kek_id: Option<String>,
}

fn view(key: &SigningKey, keys: &[SigningKey], now: Timestamp) -> KeyView {
    let state = match state_at(key, keys, now) {
        KeyState::Signing => "Signing",
        KeyState::Next { .. } => "Next",
        KeyState::Verifying { .. } => "Verifying",
        KeyState::Retired { .. } => "Retired",
    };
    KeyView {
        kid: key.kid.clone(),
        state,
        created: key.created,
        activates: key.activates,
        verify_until: key.verify_until,
        retired: key.retired,
        kek_id: key.kek_id.clone(),
    }
}

fn table(keys: &[KeyView]) -> String {
    if keys.is_empty() {
        return "No signing keys yet: the server makes one at its first start.\n".into();
    }
    let mut t = Table::new(vec![
        "KID",
        "STATE",
        "SIGNS FROM (UTC)",
        "VERIFIES UNTIL (UTC)",
    ]);
    let time =
        |t: Option<Timestamp>| t.map_or("-".to_string(), |t| t.to_string()[..19].replace('T', " "));
    for k in keys {
        let until = k.retired.or(k.verify_until);
        t.push(vec![
            k.kid.clone(),
            k.state.to_string(),
            time(Some(k.activates)),
            time(until),
        ]);
    }
    t.render()
}

async fn list(offline: &OfflineArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let (store, _) = open_offline(offline, ctx.env).await?;
    let keys = store.signing_keys().await;
    store.close().await;
    let keys = keys.map_err(|e| CliError::Failed(e.to_string()))?;
    let now = SystemClock.now();
    let views: Vec<KeyView> = keys.iter().map(|k| view(k, &keys, now)).collect();
    let text = match ctx.format {
        OutputFormat::Json => output::json(&views),
        OutputFormat::Table => table(&views),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The store and its keys opened as a server would at start (the key file must be the
/// one the keys were sealed with).
async fn open_keys(
    offline: &OfflineArgs,
    ctx: &Ctx<'_>,
) -> Result<(OpenStore, ServerConfig, KeyRing), CliError> {
    let (store, config) = open_offline(offline, ctx.env).await?;
    match KeyRing::open(
        &*store,
        &SystemClock,
        &config.key_file(),
        config.allow_group_read,
        config.rotation_timing(),
    )
    .await
    {
        Ok(ring) => Ok((store, config, ring)),
        Err(e) => {
            store.close().await;
            Err(CliError::Failed(e))
        }
    }
}

async fn rotate(offline: &OfflineArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let (store, _, ring) = open_keys(offline, ctx).await?;
    let now = SystemClock.now();
    let result = keyring::rotate(&*store, ring.kek(), ring.timing(), now, false).await;
    let keys = store.signing_keys().await;
    store.close().await;
    let added = result
        .map_err(|e| CliError::Failed(e.to_string()))?
        .ok_or_else(|| {
            CliError::Failed(
                "another rotation (a server's scheduled one?) came first; run keys list".into(),
            )
        })?;
    let keys = keys.map_err(|e| CliError::Failed(e.to_string()))?;
    let new = view(&added, &keys, now);
    match ctx.format {
        OutputFormat::Json => ctx.out.write_all(output::json(&new).as_bytes())?,
        OutputFormat::Table => {
            let replaced = keys
                .iter()
                .filter(|k| k.kid != added.kid && k.retired.is_none())
                .filter_map(|k| {
                    k.verify_until
                        .map(|u| format!("{} verifies until {u}", k.kid))
                })
                .collect::<Vec<_>>();
            let text = format!(
                "Added signing key {}: published now, signs from {} (once every server has \
                 read it).\n{}",
                added.kid,
                added.activates,
                if replaced.is_empty() {
                    String::new()
                } else {
                    format!(
                        "Replaced keys keep verifying their tokens: {}.\n",
                        replaced.join("; ")
                    )
                }
            );
            ctx.out.write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn retire(offline: &OfflineArgs, kid: &str, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let (store, config, ring) = open_keys(offline, ctx).await?;
    let now = SystemClock.now();
    let result = keyring::retire(
        &*store,
        ring.kek(),
        ring.timing(),
        kid.trim(),
        now,
        RETIRE_ACTOR,
    )
    .await;
    let keys = store.signing_keys().await;
    store.close().await;
    let signing = keys
        .ok()
        .and_then(|keys| appfence_core::signing_keys::signer_at(&keys, now).map(|k| k.kid.clone()));
    let retired = result
        .map_err(|e| CliError::Failed(e.to_string()))?
        .ok_or_else(|| {
            CliError::Usage(format!(
                "there is no signing key {kid:?} that is not retired already (see keys list)"
            ))
        })?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "retired": kid.trim(),
            "replacement": retired.replacement.as_ref().map(|k| &k.kid),
            "signing": signing,
        })),
        OutputFormat::Table => format!(
            "Retired signing key {}: every server refuses its tokens within {:?}.\n\
             Signing now: {}.\n",
            kid.trim(),
            config.key_refresh_interval,
            signing.as_deref().unwrap_or("(none)")
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
