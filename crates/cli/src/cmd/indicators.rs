//! `indicators add|import|list|delete`: file indicators (MDE's indicators API) that
//! block, audit or allow a file by SHA-256.

use std::process::ExitCode;

use appfence_client::NewIndicator;

use super::{connect, print_collection, Ctx};
use crate::args::{
    IndicatorAddArgs, IndicatorDeleteArgs, IndicatorImportArgs, IndicatorsCommand, ListArgs,
    OutputFormat,
};
use crate::error::CliError;
use crate::output;

/// What the action does, as the default description.
fn default_description(action: &str) -> &'static str {
    match action.to_ascii_lowercase().as_str() {
        "allowed" => "Allowed to run on restricted devices",
        "audit" | "alert" => "Runs are allowed and reported",
        _ => "Blocked from running on every device in scope",
    }
}

pub async fn run(cmd: &IndicatorsCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        IndicatorsCommand::Add(args) => add(args, ctx).await,
        IndicatorsCommand::Import(args) => import(args, ctx).await,
        IndicatorsCommand::List(args) => list(args, ctx).await,
        IndicatorsCommand::Delete(args) => delete(args, ctx).await,
    }
}

async fn add(args: &IndicatorAddArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let sha256 = args.sha256.trim();
    let action = args.action.trim();
    let title = args.title.clone().unwrap_or_else(|| {
        let head: String = sha256.chars().take(12).collect();
        format!("{action} file {head}")
    });
    let description = args
        .description
        .as_deref()
        .unwrap_or(default_description(action));
    let mut indicator = NewIndicator::file_sha256(sha256, action, &title, description);
    indicator.application = args.application.clone();
    indicator.expiration_time = args.expires.clone();
    indicator.rbac_group_names = args.groups.clone();
    // MDE requires generateAlert for Audit.
    if args.generate_alert || action.eq_ignore_ascii_case("Audit") {
        indicator.generate_alert = Some(true);
    }
    let stored = client.submit_indicator(&indicator).await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&stored),
        OutputFormat::Table => output::indicator_details(&stored),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `indicators import FILE.csv`: every row sent in one import; each row's result shown.
async fn import(args: &IndicatorImportArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", args.file.display())))?;
    let rows = crate::indicator_csv::parse(&text).map_err(CliError::Usage)?;
    let client = connect::client(&args.connect, ctx.env)?;
    let answer = client.import_indicators(&rows).await?;
    let failed = answer.value.iter().filter(|r| r.is_failed).count();
    let text = match ctx.format {
        OutputFormat::Json => output::json(&answer),
        OutputFormat::Table => {
            let mut t = String::new();
            for (n, r) in answer.value.iter().enumerate() {
                let line = match (&r.id, &r.failure_reason) {
                    (Some(id), _) => {
                        format!("row {}: {} stored as indicator {id}\n", n + 2, r.indicator)
                    }
                    (None, reason) => format!(
                        "row {}: {} refused: {}\n",
                        n + 2,
                        r.indicator,
                        reason.as_deref().unwrap_or("no reason given")
                    ),
                };
                t.push_str(&line);
            }
            t.push_str(&format!(
                "{} stored, {failed} refused.\n",
                answer.value.len() - failed
            ));
            t
        }
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn list(args: &ListArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let filter = args.filter.as_deref();
    let page = if args.all {
        client.list_indicators_all(filter).await?
    } else {
        client.list_indicators(filter, args.top).await?
    };
    print_collection(ctx, &page, output::indicators_table)?;
    Ok(ExitCode::SUCCESS)
}

async fn delete(args: &IndicatorDeleteArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    client.delete_indicator(args.id.trim()).await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({ "deleted": args.id.trim() })),
        OutputFormat::Table => format!("Deleted indicator {}.\n", args.id.trim()),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
