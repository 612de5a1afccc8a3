//! `restrict`, `unrestrict`, `machines offboard` and `actions list|get|cancel`.

use std::process::ExitCode;
use std::time::Duration;

use appfence_client::{ClientError, MdeClient};
use appfence_proto::{ActionStatus, MachineAction};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use super::{connect, print_collection, Ctx};
use crate::args::{ActionArgs, ActionsCommand, CancelArgs, GetArgs, ListArgs, OutputFormat};
use crate::duration::format_duration;
use crate::error::CliError;
use crate::output;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Restrict,
    Unrestrict,
    Offboard,
}

/// `restrict` / `unrestrict` / `machines offboard`, optionally waiting for the outcome.
pub async fn submit(
    kind: Kind,
    args: &ActionArgs,
    ctx: &mut Ctx<'_>,
) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let action = match kind {
        Kind::Restrict => client.restrict(&args.machine, &args.comment).await?,
        Kind::Unrestrict => client.unrestrict(&args.machine, &args.comment).await?,
        Kind::Offboard => client.offboard(&args.machine, &args.comment).await?,
    };
    if !args.wait {
        print_action(ctx, &action)?;
        return Ok(ExitCode::SUCCESS);
    }
    let last = wait_final(&client, action, args.timeout, args.poll_interval).await?;
    print_action(ctx, &last)?;
    Ok(final_exit_code(&last))
}

pub async fn run(cmd: &ActionsCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        ActionsCommand::List(args) => list(args, ctx).await,
        ActionsCommand::Get(args) => get(args, ctx).await,
        ActionsCommand::Cancel(args) => cancel(args, ctx).await,
    }
}

async fn list(args: &ListArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let filter = args.filter.as_deref();
    let page = if args.all {
        client.list_actions_all(filter).await?
    } else {
        client.list_actions(filter, args.top).await?
    };
    print_collection(ctx, &page, output::actions_table)?;
    Ok(ExitCode::SUCCESS)
}

async fn get(args: &GetArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let action = client.get_action(&args.id).await?;
    print_action(ctx, &action)?;
    Ok(ExitCode::SUCCESS)
}

async fn cancel(args: &CancelArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let action = client
        .cancel_action(&args.id, args.comment.as_deref())
        .await?;
    print_action(ctx, &action)?;
    Ok(ExitCode::SUCCESS)
}

/// 0 only for `Succeeded`: a script running `restrict --wait` must not go on after a
/// restriction that did not happen.
fn final_exit_code(action: &MachineAction) -> ExitCode {
    if action.status == ActionStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        eprintln!("action {} ended {}", action.id, action.status.as_str());
        ExitCode::FAILURE
    }
}

/// Polls the action until it is final, with a spinner on stderr (hidden when stderr is
/// not a terminal). A 429 is waited out, not fatal: polling every 500 ms exceeds MDE's
/// 100 calls a minute on a slow device.
async fn wait_final(
    client: &MdeClient,
    mut action: MachineAction,
    timeout: Duration,
    interval: Duration,
) -> Result<MachineAction, CliError> {
    let deadline = Instant::now() + timeout;
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("a valid template"),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    let result = loop {
        spinner.set_message(format!(
            "{} {} on {}: {}",
            action.action_type.as_str(),
            action.id,
            action
                .computer_dns_name
                .as_deref()
                .or(action.machine_id.as_deref())
                .unwrap_or("?"),
            action.status.as_str()
        ));
        if action.status.is_final() {
            break Ok(action);
        }
        let now = Instant::now();
        if now >= deadline {
            break Err(CliError::Failed(format!(
                "gave up after {} waiting for action {}: it is still {}",
                format_duration(timeout),
                action.id,
                action.status.as_str()
            )));
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        match client.get_action(&action.id).await {
            Ok(a) => action = a,
            Err(ClientError::Api {
                status: 429,
                retry_after,
                ..
            }) => {
                let pause = retry_after.unwrap_or(Duration::from_secs(1));
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
            }
            Err(e) => break Err(e.into()),
        }
    };
    spinner.finish_and_clear();
    result
}

fn print_action(ctx: &mut Ctx<'_>, action: &MachineAction) -> Result<(), CliError> {
    let text = match ctx.format {
        OutputFormat::Json => output::json(action),
        OutputFormat::Table => output::action_details(action),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(())
}
