//! `tenant show|set`: a tenant's settings, directly in the server's store. Today one:
//! whether its token endpoints accept `grant_type=password`. Running servers read it at
//! every password-grant request, so a change applies at once on every replica.

use std::process::ExitCode;

use appfence_core::{Clock, SystemClock, Tenant};
use serde::Serialize;

use super::{cli_actor, failed, with_store, Ctx};
use crate::args::{OfflineArgs, OutputFormat, TenantCommand, TenantSetArgs};
use crate::error::CliError;
use crate::output;

pub async fn run(cmd: &TenantCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        TenantCommand::Show(args) => show(&args.offline, ctx).await,
        TenantCommand::Set(args) => set(args, ctx).await,
    }
}

/// What `tenant show` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub password_grant: bool,
}

fn view(tenant: Tenant, password_grant: Option<bool>) -> TenantView {
    TenantView {
        id: tenant.id,
        name: tenant.name,
        password_grant: password_grant == Some(true),
    }
}

fn on_off(on: bool) -> String {
    if on { "on" } else { "off" }.to_string()
}

fn print(view: &TenantView, ctx: &mut Ctx<'_>) -> Result<(), CliError> {
    let text = match ctx.format {
        OutputFormat::Json => output::json(view),
        OutputFormat::Table => output::details(&[
            ("Tenant", view.id.clone()),
            ("Name", view.name.clone()),
            ("Password grant", on_off(view.password_grant)),
        ]),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(())
}

async fn show(offline: &OfflineArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let view = with_store(offline, ctx, async |store, tenant| {
        let on = store.password_grant(&tenant.id).await.map_err(failed)?;
        Ok(view(tenant, on))
    })
    .await?;
    print(&view, ctx)?;
    Ok(ExitCode::SUCCESS)
}

async fn set(args: &TenantSetArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let view = with_store(&args.offline, ctx, async |store, tenant| {
        let on = store
            .set_password_grant(
                &tenant.id,
                args.password_grant,
                &cli_actor("tenant set"),
                SystemClock.now(),
            )
            .await
            .map_err(failed)?;
        Ok(view(tenant, on))
    })
    .await?;
    print(&view, ctx)?;
    Ok(ExitCode::SUCCESS)
}
