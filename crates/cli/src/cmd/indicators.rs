//! `indicators add|list|delete`: the allowlist of files restricted devices let run.

use std::process::ExitCode;

use appfence_client::NewIndicator;

use super::{connect, print_collection, Ctx};
use crate::args::{
    IndicatorAddArgs, IndicatorDeleteArgs, IndicatorsCommand, ListArgs, OutputFormat,
};
use crate::error::CliError;
use crate::output;

const DEFAULT_DESCRIPTION: &str = "Allowed to run on restricted devices";

pub async fn run(cmd: &IndicatorsCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        IndicatorsCommand::Add(args) => add(args, ctx).await,
        IndicatorsCommand::List(args) => list(args, ctx).await,
        IndicatorsCommand::Delete(args) => delete(args, ctx).await,
    }
}

async fn add(args: &IndicatorAddArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let sha256 = args.sha256.trim();
    let title = args.title.clone().unwrap_or_else(|| {
        let head: String = sha256.chars().take(12).collect();
        format!("Allowed file {head}")
    });
    let description = args.description.as_deref().unwrap_or(DEFAULT_DESCRIPTION);
    let mut indicator = NewIndicator::allow_sha256(sha256, &title, description);
    indicator.application = args.application.clone();
    indicator.expiration_time = args.expires.clone();
    let stored = client.submit_indicator(&indicator).await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&stored),
        OutputFormat::Table => output::indicator_details(&stored),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
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
