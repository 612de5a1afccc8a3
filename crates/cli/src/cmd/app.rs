//! `app create|list|show|disable|enable|delete` and `app secret add|remove`: OAuth
//! clients and their secrets, directly in the server's store (the data directory's
//! SQLite, or PostgreSQL). Secrets are printed once, when made; afterwards only their
//! ids, first characters (`hint`) and times are shown.

use std::process::ExitCode;

use appfence_core::records::AppSecret;
use appfence_core::{AppRegistration, Clock, SystemClock, Tenant};
use appfence_proto::Timestamp;
use appfence_server::oauth::apps::{add_secret, register_app};
use appfence_server::oauth::principal_state::STATE_TTL;
use appfence_store::Store;
use serde::Serialize;

use super::{cli_actor, failed, table_time, with_store, Ctx};
use crate::args::{
    AppCommand, AppCreateArgs, AppRefArgs, AppSecretAddArgs, AppSecretCommand, AppSecretRemoveArgs,
    OfflineArgs, OutputFormat,
};
use crate::error::CliError;
use crate::output::{self, Table};

pub async fn run(cmd: &AppCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        AppCommand::Create(args) => create(args, ctx).await,
        AppCommand::List(args) => list(&args.offline, ctx).await,
        AppCommand::Show(args) => show(args, ctx).await,
        AppCommand::Disable(args) => set_disabled(args, true, ctx).await,
        AppCommand::Enable(args) => set_disabled(args, false, ctx).await,
        AppCommand::Delete(args) => delete(args, ctx).await,
        AppCommand::Secret(AppSecretCommand::Add(args)) => secret_add(args, ctx).await,
        AppCommand::Secret(AppSecretCommand::Remove(args)) => secret_remove(args, ctx).await,
    }
}

/// What `--output json` prints; the secret appears here and nowhere else.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApp {
    pub tenant_id: String,
    pub tenant_name: String,
    pub client_id: String,
    pub client_secret: String,
    pub secret_id: String,
    pub secret_expires: Option<Timestamp>,
    pub display_name: String,
    pub roles: Vec<String>,
    /// A public client (no secret is used) and its redirect URIs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
}

/// An application as `list` and `show` print it: never a secret nor its hash.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub tenant_id: String,
    pub client_id: String,
    pub display_name: String,
    /// `Enabled` or `Disabled`.
    pub state: &'static str,
    pub disabled: Option<Timestamp>,
    pub roles: Vec<String>,
    pub created: Timestamp,
    pub secrets: Vec<SecretView>,
}

/// A client secret as `show` prints it (Entra's `passwordCredential` without the value).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    pub id: String,
    /// The secret's first characters.
    pub hint: Option<String>,
    pub created: Timestamp,
    /// `None`: never (a secret from before secrets expired).
    pub expires: Option<Timestamp>,
    pub expired: bool,
}

fn secret_view(s: &AppSecret, now: Timestamp) -> SecretView {
    SecretView {
        id: s.id.clone(),
        hint: s.hint.clone(),
        created: s.created,
        expires: s.expires,
        expired: s.is_expired(now),
    }
}

fn app_view(app: &AppRegistration, secrets: &[AppSecret], now: Timestamp) -> AppView {
    AppView {
        tenant_id: app.tenant_id.clone(),
        client_id: app.client_id.clone(),
        display_name: app.display_name.clone(),
        state: if app.disabled.is_some() {
            "Disabled"
        } else {
            "Enabled"
        },
        disabled: app.disabled,
        roles: app.roles.clone(),
        created: app.created,
        secrets: secrets.iter().map(|s| secret_view(s, now)).collect(),
    }
}

const SECRET_WARNING: &str =
    "Save the client secret now: only its hash is stored, it cannot be shown again.";

/// The tenant's application named by client id, or by display name (any case) when
/// exactly one application has it.
pub(super) async fn find_app(
    store: &dyn Store,
    tenant: &Tenant,
    reference: &str,
) -> Result<AppRegistration, CliError> {
    let reference = reference.trim();
    if let Some(app) = store
        .app(&tenant.id, reference)
        .await
        .map_err(failed)?
        .or(store
            .app(&tenant.id, &reference.to_ascii_lowercase())
            .await
            .map_err(failed)?)
    {
        return Ok(app);
    }
    let mut named: Vec<AppRegistration> = store
        .apps(&tenant.id)
        .await
        .map_err(failed)?
        .into_iter()
        .filter(|a| a.display_name.eq_ignore_ascii_case(reference))
        .collect();
    match named.len() {
        1 => Ok(named.remove(0)),
        0 => Err(CliError::Usage(format!(
            "there is no application {reference:?} in tenant {:?} (give its client id or \
             name; `appfence app list` shows them)",
            tenant.name
        ))),
        _ => Err(CliError::Usage(format!(
            "{} applications are named {reference:?}; give the client id: {}",
            named.len(),
            named
                .iter()
                .map(|a| a.client_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn create(args: &AppCreateArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let created = with_store(&args.offline, ctx, async |store, tenant| {
        let (app, stored, client_secret) = register_app(
            store,
            &SystemClock,
            &tenant.id,
            &args.name,
            &args.roles,
            args.expires,
            &cli_actor("app create"),
        )
        .await
        .map_err(failed)?;
        if args.public || !args.redirect_uris.is_empty() {
            register_client(store, &app, args).await?;
        }
        Ok(CreatedApp {
            tenant_id: tenant.id,
            tenant_name: tenant.name,
            client_id: app.client_id,
            // A public client never uses a secret: none is shown.
            client_secret: if args.public {
                String::new()
            } else {
                client_secret
            },
            secret_id: stored.id,
            secret_expires: stored.expires,
            display_name: app.display_name,
            roles: app.roles,
            public: args.public,
            redirect_uris: args.redirect_uris.clone(),
        })
    })
    .await?;

    match ctx.format {
        OutputFormat::Json => {
            ctx.out.write_all(output::json(&created).as_bytes())?;
            eprintln!("{SECRET_WARNING}");
        }
        OutputFormat::Table => {
            let text = format!(
                "Registered application {:?} in tenant {:?}.\n\n{}\n{SECRET_WARNING}\n\
                 Get tokens from POST <server>/{}/oauth2/v2.0/token (client credentials).\n",
                created.display_name,
                created.tenant_name,
                output::details(&[
                    ("tenant id", created.tenant_id.clone()),
                    ("client id", created.client_id.clone()),
                    (
                        "client secret",
                        if created.public {
                            "(none: a public client)".to_string()
                        } else {
                            created.client_secret.clone()
                        },
                    ),
                    ("secret id", created.secret_id.clone()),
                    ("expires", table_time(created.secret_expires)),
                    ("roles", created.roles.join(", ")),
                ]),
                created.tenant_id,
            );
            ctx.out.write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Records the application as a public client and/or its redirect URIs.
async fn register_client(
    store: &dyn Store,
    app: &AppRegistration,
    args: &AppCreateArgs,
) -> Result<(), CliError> {
    for uri in &args.redirect_uris {
        let ok = uri.starts_with("https://")
            || uri.starts_with("http://127.0.0.1")
            || uri.starts_with("http://[::1]")
            || uri.starts_with("http://localhost")
            || (!uri.starts_with("http://") && uri.contains(":/"));
        if !ok || uri.contains('#') {
            return Err(CliError::Usage(format!(
                "The redirect URI {uri:?} is not accepted: use https://, a loopback http:// \
                 URI (127.0.0.1, [::1], localhost), or a private-use scheme; no fragment"
            )));
        }
    }
    store
        .upsert_client_registration(&appfence_core::grants::ClientRegistration {
            tenant_id: app.tenant_id.clone(),
            client_id: app.client_id.clone(),
            public: args.public,
            redirect_uris: args.redirect_uris.clone(),
        })
        .await
        .map_err(failed)
}

async fn list(offline: &OfflineArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let now = SystemClock.now();
    let views = with_store(offline, ctx, async |store, tenant| {
        let mut views = Vec::new();
        for app in store.apps(&tenant.id).await.map_err(failed)? {
            let secrets = store
                .app_secrets(&tenant.id, &app.client_id)
                .await
                .map_err(failed)?;
            views.push(app_view(&app, &secrets, now));
        }
        Ok(views)
    })
    .await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&views),
        OutputFormat::Table if views.is_empty() => {
            "No applications yet: `appfence app create --name NAME --role ROLE` registers one.\n"
                .to_string()
        }
        OutputFormat::Table => {
            let mut t = Table::new(vec![
                "CLIENT ID",
                "NAME",
                "STATE",
                "SECRETS",
                "NEXT EXPIRY (UTC)",
                "ROLES",
            ]);
            for v in &views {
                let live: Vec<&SecretView> = v.secrets.iter().filter(|s| !s.expired).collect();
                let next = live.iter().filter_map(|s| s.expires).min();
                let never = live.iter().any(|s| s.expires.is_none());
                t.push(vec![
                    v.client_id.clone(),
                    v.display_name.clone(),
                    v.state.to_string(),
                    secrets_count(v),
                    match (next, never) {
                        (Some(t), _) => table_time(Some(t)),
                        (None, true) => "never".into(),
                        (None, false) => "-".into(),
                    },
                    v.roles.join(", "),
                ]);
            }
            t.render()
        }
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `2` or `2 (1 expired)`.
fn secrets_count(v: &AppView) -> String {
    let expired = v.secrets.iter().filter(|s| s.expired).count();
    if expired == 0 {
        v.secrets.len().to_string()
    } else {
        format!("{} ({expired} expired)", v.secrets.len())
    }
}

async fn show(args: &AppRefArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let now = SystemClock.now();
    let view = with_store(&args.offline, ctx, async |store, tenant| {
        let app = find_app(store, &tenant, &args.app).await?;
        let secrets = store
            .app_secrets(&tenant.id, &app.client_id)
            .await
            .map_err(failed)?;
        Ok(app_view(&app, &secrets, now))
    })
    .await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&view),
        OutputFormat::Table => {
            let state = match view.disabled {
                Some(t) => format!("Disabled since {}", table_time(Some(t))),
                None => "Enabled".into(),
            };
            let mut text = output::details(&[
                ("client id", view.client_id.clone()),
                ("name", view.display_name.clone()),
                ("tenant id", view.tenant_id.clone()),
                ("state", state),
                ("roles", view.roles.join(", ")),
                ("created", table_time(Some(view.created))),
            ]);
            text.push('\n');
            if view.secrets.is_empty() {
                text.push_str(
                    "No client secrets (a public client); `appfence app secret add` adds one.\n",
                );
            } else {
                let mut t = Table::new(vec![
                    "SECRET ID",
                    "HINT",
                    "CREATED (UTC)",
                    "EXPIRES (UTC)",
                    "STATE",
                ]);
                for s in &view.secrets {
                    t.push(vec![
                        s.id.clone(),
                        s.hint
                            .as_ref()
                            .map_or("-".to_string(), |h| format!("{h}...")),
                        table_time(Some(s.created)),
                        s.expires.map_or("never".into(), |e| table_time(Some(e))),
                        if s.expired { "Expired" } else { "Valid" }.into(),
                    ]);
                }
                text.push_str(&t.render());
            }
            text
        }
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn set_disabled(
    args: &AppRefArgs,
    disabled: bool,
    ctx: &mut Ctx<'_>,
) -> Result<ExitCode, CliError> {
    let command = if disabled {
        "app disable"
    } else {
        "app enable"
    };
    let (before, after) = with_store(&args.offline, ctx, async |store, tenant| {
        let app = find_app(store, &tenant, &args.app).await?;
        let after = store
            .set_app_disabled(
                &tenant.id,
                &app.client_id,
                disabled,
                &cli_actor(command),
                SystemClock.now(),
            )
            .await
            .map_err(failed)?
            .ok_or_else(|| CliError::Failed(format!("{} was deleted meanwhile", app.client_id)))?;
        Ok((app, after))
    })
    .await?;
    let changed = before.disabled.is_some() != after.disabled.is_some();
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "clientId": after.client_id,
            "displayName": after.display_name,
            "state": if after.disabled.is_some() { "Disabled" } else { "Enabled" },
            "disabled": after.disabled,
            "changed": changed,
        })),
        OutputFormat::Table => match (disabled, changed) {
            (true, true) => format!(
                "Disabled {} ({}): it gets no token from now on, and its tokens are \
                 refused by every server within {} s.\n",
                after.display_name,
                after.client_id,
                STATE_TTL.as_secs()
            ),
            (true, false) => format!(
                "{} ({}) was disabled already.\n",
                after.display_name, after.client_id
            ),
            (false, true) => format!(
                "Enabled {} ({}): it gets tokens again.\n",
                after.display_name, after.client_id
            ),
            (false, false) => format!(
                "{} ({}) was enabled already.\n",
                after.display_name, after.client_id
            ),
        },
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn delete(args: &AppRefArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let app = with_store(&args.offline, ctx, async |store, tenant| {
        let app = find_app(store, &tenant, &args.app).await?;
        store
            .delete_app(
                &tenant.id,
                &app.client_id,
                &cli_actor("app delete"),
                SystemClock.now(),
            )
            .await
            .map_err(failed)?;
        Ok(app)
    })
    .await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "clientId": app.client_id,
            "displayName": app.display_name,
            "deleted": true,
        })),
        OutputFormat::Table => format!(
            "Deleted {} ({}) and its secrets: it gets no token from now on, and its tokens \
             are refused by every server within {} s.\n",
            app.display_name,
            app.client_id,
            STATE_TTL.as_secs()
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// What `app secret add --output json` prints; the secret appears here and nowhere else.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddedSecret {
    pub client_id: String,
    pub display_name: String,
    pub secret_id: String,
    pub client_secret: String,
    pub hint: Option<String>,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
}

async fn secret_add(args: &AppSecretAddArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let added = with_store(&args.offline, ctx, async |store, tenant| {
        let app = find_app(store, &tenant, &args.app).await?;
        let (stored, secret) = add_secret(
            store,
            &SystemClock,
            &tenant.id,
            &app.client_id,
            args.expires,
            &cli_actor("app secret add"),
        )
        .await
        .map_err(failed)?;
        Ok(AddedSecret {
            client_id: app.client_id,
            display_name: app.display_name,
            secret_id: stored.id,
            client_secret: secret,
            hint: stored.hint,
            created: stored.created,
            expires: stored.expires,
        })
    })
    .await?;
    match ctx.format {
        OutputFormat::Json => {
            ctx.out.write_all(output::json(&added).as_bytes())?;
            eprintln!("{SECRET_WARNING}");
        }
        OutputFormat::Table => {
            let text = format!(
                "Added a client secret to {} ({}); its other secrets keep working.\n\n{}\n\
                 {SECRET_WARNING}\nOnce every client uses it, remove the old one: \
                 appfence app secret remove {} <old secret id>\n",
                added.display_name,
                added.client_id,
                output::details(&[
                    ("client secret", added.client_secret.clone()),
                    ("secret id", added.secret_id.clone()),
                    ("expires", table_time(added.expires)),
                ]),
                added.client_id,
            );
            ctx.out.write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn secret_remove(
    args: &AppSecretRemoveArgs,
    ctx: &mut Ctx<'_>,
) -> Result<ExitCode, CliError> {
    let (app, left) = with_store(&args.offline, ctx, async |store, tenant| {
        let app = find_app(store, &tenant, &args.app).await?;
        let id = args.secret_id.trim().to_ascii_lowercase();
        if !store
            .remove_app_secret(
                &tenant.id,
                &app.client_id,
                &id,
                &cli_actor("app secret remove"),
                SystemClock.now(),
            )
            .await
            .map_err(failed)?
        {
            return Err(CliError::Usage(format!(
                "{} ({}) has no secret {:?} (`appfence app show {}` lists its secrets)",
                app.display_name, app.client_id, args.secret_id, app.client_id
            )));
        }
        let left = store
            .app_secrets(&tenant.id, &app.client_id)
            .await
            .map_err(failed)?;
        Ok((app, left))
    })
    .await?;
    let now = SystemClock.now();
    let valid = left.iter().filter(|s| !s.is_expired(now)).count();
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "clientId": app.client_id,
            "removedSecretId": args.secret_id.trim().to_ascii_lowercase(),
            "validSecrets": valid,
        })),
        OutputFormat::Table => format!(
            "Removed secret {} of {} ({}): it gets no token any more. {valid} valid secret(s) \
             left.\n",
            args.secret_id.trim(),
            app.display_name,
            app.client_id
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
