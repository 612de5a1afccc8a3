//! `app create`: registers an OAuth client directly in the data directory's database.

use std::process::ExitCode;

use appfence_core::{Error, SystemClock};
use appfence_server::oauth::apps::create_app;
use appfence_store::Store;
use serde::Serialize;

use super::{open_data_dir_store, tenant_or_default, Ctx};
use crate::args::{AppCommand, AppCreateArgs, OutputFormat};
use crate::error::CliError;
use crate::output;

pub async fn run(cmd: &AppCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        AppCommand::Create(args) => create(args, ctx).await,
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
    pub display_name: String,
    pub roles: Vec<String>,
    /// A public client (no secret is used) and its redirect URIs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
}

const SECRET_WARNING: &str =
    "Save the client secret now: only its hash is stored, it cannot be shown again.";

async fn create(args: &AppCreateArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let store = open_data_dir_store(&args.offline, ctx.env).await?;
    let created = register(&*store, args).await;
    store.close().await;
    let created = created?;

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
                    ("roles", created.roles.join(", ")),
                ]),
                created.tenant_id,
            );
            ctx.out.write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn register(store: &dyn Store, args: &AppCreateArgs) -> Result<CreatedApp, CliError> {
    let tenant = tenant_or_default(store, args.offline.tenant.as_deref()).await?;
    let (app, client_secret) = create_app(store, &SystemClock, &tenant.id, &args.name, &args.roles)
        .await
        .map_err(|e| match e {
            // An empty name or an unknown role: the arguments are wrong.
            Error::BadRequest(m) => CliError::Usage(m),
            other => failed(other),
        })?;
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
        display_name: app.display_name,
        roles: app.roles,
        public: args.public,
        redirect_uris: args.redirect_uris.clone(),
    })
}

/// Records the application as a public client and/or its redirect URIs.
async fn register_client(
    store: &dyn Store,
    app: &appfence_core::AppRegistration,
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

fn failed(e: Error) -> CliError {
    CliError::Failed(e.to_string())
}
