//! `machines list|get|events|find|tag|update|offboard`.

use std::process::ExitCode;

use appfence_client::ClientError;

use super::{connect, print_collection, Ctx};
use crate::args::{
    EventsArgs, FindArgs, GetArgs, ListArgs, MachineUpdateArgs, MachinesCommand, OutputFormat,
    TagArgs,
};
use crate::error::CliError;
use crate::output;

pub async fn run(cmd: &MachinesCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        MachinesCommand::List(args) => list(args, ctx).await,
        MachinesCommand::Get(args) => get(args, ctx).await,
        MachinesCommand::Events(args) => events(args, ctx).await,
        MachinesCommand::Find(args) => find(args, ctx).await,
        MachinesCommand::Tag(args) => tag(args, ctx).await,
        MachinesCommand::Update(args) => update(args, ctx).await,
        MachinesCommand::Offboard(args) => {
            super::actions::submit(super::actions::Kind::Offboard, args, ctx).await
        }
    }
}

/// `machines find --ip IP [--at TIME]` or `machines find --tag T [--prefix]`.
async fn find(args: &FindArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let found = match (&args.ip, &args.tag) {
        (Some(ip), _) => {
            let at = match &args.at {
                Some(t) => t.clone(),
                None => {
                    use appfence_core::Clock;
                    // Whole seconds: what MDE's examples write.
                    let now = appfence_core::SystemClock.now();
                    appfence_proto::Timestamp::from_unix_seconds(now.unix_seconds()).to_string()
                }
            };
            client.find_machines_by_ip(ip, &at).await?
        }
        (None, Some(tag)) => client.find_machines_by_tag(tag, args.prefix).await?,
        (None, None) => return Err(CliError::Usage("give --ip or --tag".into())),
    };
    print_collection(ctx, &found, output::machines_table)?;
    Ok(ExitCode::SUCCESS)
}

/// `machines tag MACHINE --add T | --remove T`.
async fn tag(args: &TagArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let (tag, add) = match (&args.add, &args.remove) {
        (Some(t), None) => (t, true),
        (None, Some(t)) => (t, false),
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --add or --remove".into(),
            ))
        }
    };
    let machine = client.tag_machine(&args.machine, tag, add).await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&machine),
        OutputFormat::Table => output::machine_details(&machine, None),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `machines update MACHINE [--device-value V] [--tags a,b]`.
async fn update(args: &MachineUpdateArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let tags: Option<Vec<String>> = args.tags.as_deref().map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    });
    let machine = client
        .update_machine(&args.machine, tags.as_deref(), args.device_value.as_deref())
        .await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&machine),
        OutputFormat::Table => output::machine_details(&machine, None),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
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

/// The machine, and its enforcement state unless the server has no such endpoint
/// (MDE itself), in which case the machine alone is shown.
async fn get(args: &GetArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let machine = client.get_machine(&args.id).await?;
    let enforcement = match client.machine_enforcement(&machine.id).await {
        Ok(e) => Some(e),
        Err(ClientError::Api {
            status: 404 | 405, ..
        }) => None,
        Err(e) => return Err(e.into()),
    };
    let text = match ctx.format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&machine).expect("wire types always serialise");
            if let (Some(obj), Some(e)) = (v.as_object_mut(), &enforcement) {
                obj.insert(
                    "enforcement".into(),
                    serde_json::to_value(e).expect("wire types always serialise"),
                );
            }
            output::json(&v)
        }
        OutputFormat::Table => output::machine_details(&machine, enforcement.as_ref()),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn events(args: &EventsArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let page = client.machine_events(&args.machine, args.top).await?;
    print_collection(ctx, &page, output::events_table)?;
    Ok(ExitCode::SUCCESS)
}
