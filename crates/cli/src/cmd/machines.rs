//! `machines list|get`.

use std::process::ExitCode;

use super::{connect, print_collection, Ctx};
use crate::args::{GetArgs, ListArgs, MachinesCommand, OutputFormat};
use crate::error::CliError;
use crate::output;

pub async fn run(cmd: &MachinesCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        MachinesCommand::List(args) => list(args, ctx).await,
        MachinesCommand::Get(args) => get(args, ctx).await,
    }
}

async fn list(args: &ListArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let filter = args.filter.as_deref();
    let page = if args.all {
        client.list_machines_all(filter).await?
    } else {
        client.list_machines(filter, args.top).await?
    };
    print_collection(ctx, &page, output::machines_table)?;
    Ok(ExitCode::SUCCESS)
}

async fn get(args: &GetArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let machine = client.get_machine(&args.id).await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&machine),
        OutputFormat::Table => output::machine_details(&machine),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
