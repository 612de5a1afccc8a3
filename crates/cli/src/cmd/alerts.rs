//! `alerts list|show|update`: MDE's alerts API.

use std::process::ExitCode;

use appfence_client::{AlertFilter, MdeClient};
use appfence_core::Clock;
use appfence_proto::alert::{AlertBatchUpdate, AlertUpdate};
use appfence_proto::Timestamp;

use super::{connect, Ctx};
use crate::args::{AlertListArgs, AlertShowArgs, AlertUpdateArgs, AlertsCommand, OutputFormat};
use crate::error::CliError;
use crate::output;

pub async fn run(cmd: &AlertsCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        AlertsCommand::List(args) => list(args, ctx).await,
        AlertsCommand::Show(args) => show(args, ctx).await,
        AlertsCommand::Update(args) => update(args, ctx).await,
    }
}

/// `--json` of these commands, or the global `--output`.
fn format(json: bool, ctx: &Ctx<'_>) -> OutputFormat {
    if json {
        OutputFormat::Json
    } else {
        ctx.format
    }
}

/// The filter of `alerts list`, the machine already resolved to its id.
fn list_filter(args: &AlertListArgs, machine_id: Option<String>, now: Timestamp) -> AlertFilter {
    AlertFilter {
        created_after: args.since.map(|s| s.at(now)),
        statuses: args.status.iter().map(|s| s.as_str().to_string()).collect(),
        severities: args
            .severity
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        machine_id,
        extra: args.filter.clone(),
    }
}

/// A machine id as given, or the id of the machine named by its DNS name or aadDeviceId.
async fn machine_id(client: &MdeClient, machine: &str) -> Result<String, CliError> {
    let machine = machine.trim();
    let lower = machine.to_ascii_lowercase();
    if appfence_core::ids::is_machine_id(&lower) {
        return Ok(lower);
    }
    Ok(client.get_machine(machine).await?.id)
}

async fn list(args: &AlertListArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let machine = match &args.machine {
        Some(m) => Some(machine_id(&client, m).await?),
        None => None,
    };
    let filter = list_filter(args, machine, appfence_core::SystemClock.now()).to_odata();
    let format = format(args.json, ctx);
    // The table shows each alert's file hash, which is in its evidence.
    let expand = args.evidence || format == OutputFormat::Table;
    let page = match args.top {
        Some(top) => {
            client
                .list_alerts(filter.as_deref(), Some(top), expand)
                .await?
        }
        None => client.list_alerts_all(filter.as_deref(), expand).await?,
    };
    let text = match format {
        OutputFormat::Json => output::json(&page),
        OutputFormat::Table => output::alerts_table(&page.value),
    };
    ctx.out.write_all(text.as_bytes())?;
    if format == OutputFormat::Table && page.odata_next_link.is_some() {
        eprintln!("(more results: raise --top, or leave it out to list every alert)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(args: &AlertShowArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let client = connect::client(&args.connect, ctx.env)?;
    let alert = client.get_alert(args.id.trim()).await?;
    let text = match format(args.json, ctx) {
        OutputFormat::Json => output::json(&alert),
        OutputFormat::Table => output::alert_details(&alert),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The ids in the order given, each once.
fn distinct_ids(ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        if !out.iter().any(|o| o == id) {
            out.push(id.to_string());
        }
    }
    out
}

async fn update(args: &AlertUpdateArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let ids = distinct_ids(&args.ids);
    if ids.is_empty() {
        return Err(CliError::Usage("give at least one alert id".into()));
    }
    let change = AlertUpdate {
        status: args.status.map(|s| s.as_str().to_string()),
        assigned_to: args.assign_to.clone(),
        classification: args.classification.clone(),
        determination: args.determination.clone(),
        comment: args.comment.clone(),
    };
    let client = connect::client(&args.connect, ctx.env)?;
    let format = format(args.json, ctx);
    let text = if let [id] = ids.as_slice() {
        let alert = client.update_alert(id, &change).await?;
        match format {
            OutputFormat::Json => output::json(&alert),
            OutputFormat::Table => output::alert_details(&alert),
        }
    } else {
        let count = ids.len();
        let batch = AlertBatchUpdate {
            alert_ids: ids,
            update: change,
        };
        client.batch_update_alerts(&batch).await?;
        match format {
            OutputFormat::Json => output::json(&serde_json::json!({
                "updated": count,
                "alertIds": batch.alert_ids,
            })),
            OutputFormat::Table => format!("{count} alerts updated\n"),
        }
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn list_args(argv: &[&str]) -> AlertListArgs {
        let mut full = vec!["appfence", "alerts", "list"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Alerts(AlertsCommand::List(a)) => a,
            _ => unreachable!(),
        }
    }

    fn filter_of(argv: &[&str]) -> Option<String> {
        let now = Timestamp::parse("2026-12-07T10:00:00Z").unwrap();
        list_filter(&list_args(argv), None, now).to_odata()
    }

    #[test]
    fn since_is_a_time_or_how_long_ago() {
        assert_eq!(
            filter_of(&["--since", "1h"]).unwrap(),
            "alertCreationTime gt 2026-12-07T09:00:00Z"
        );
        assert_eq!(
            filter_of(&["--since", "7d"]).unwrap(),
            "alertCreationTime gt 2026-11-30T10:00:00Z"
        );
        assert_eq!(
            filter_of(&["--since", "1h30m"]).unwrap(),
            "alertCreationTime gt 2026-12-07T08:30:00Z"
        );
        assert_eq!(
            filter_of(&["--since", "2026-12-01T09:30:00+02:00"]).unwrap(),
            "alertCreationTime gt 2026-12-01T07:30:00Z"
        );
        assert_eq!(
            filter_of(&["--since", "2026-12-01T09:30:00.25Z"]).unwrap(),
            "alertCreationTime gt 2026-12-01T09:30:00.25Z"
        );
        for bad in ["yesterday", "10", "2026-12-01", "1h-", "-1h", ""] {
            let e = Cli::try_parse_from(["appfence", "alerts", "list", "--since", bad]);
            assert!(e.is_err(), "{bad:?}");
        }
        assert_eq!(filter_of(&[]), None);
    }

    #[test]
    fn statuses_and_severities_are_any_of() {
        assert_eq!(
            filter_of(&["--status", "New", "--status", "inprogress"]).unwrap(),
            "status in ('New','InProgress')"
        );
        assert_eq!(
            filter_of(&["--status", "New,Resolved"]).unwrap(),
            "status in ('New','Resolved')"
        );
        assert_eq!(
            filter_of(&["--status", "New", "InProgress"]).unwrap(),
            "status in ('New','InProgress')"
        );
        assert_eq!(
            filter_of(&["--status", "resolved"]).unwrap(),
            "status eq 'Resolved'"
        );
        assert_eq!(
            filter_of(&["--severity", "high", "--since", "30m", "--status", "New"]).unwrap(),
            "alertCreationTime gt 2026-12-07T09:30:00Z and status eq 'New' and severity eq 'High'"
        );
        assert!(Cli::try_parse_from(["appfence", "alerts", "list", "--status", "Open"]).is_err());
    }

    #[test]
    fn machine_and_extra_conditions_are_quoted_and_bracketed() {
        let now = Timestamp::parse("2026-12-07T10:00:00Z").unwrap();
        let args = list_args(&["--filter", "title eq 'it''s' or category eq 'Malware'"]);
        assert_eq!(
            list_filter(&args, Some("o'brien".into()), now)
                .to_odata()
                .unwrap(),
            "machineId eq 'o''brien' and (title eq 'it''s' or category eq 'Malware')"
        );
    }

    #[test]
    fn update_needs_an_id_and_a_change() {
        let parse = |argv: &[&str]| {
            let mut full = vec!["appfence", "alerts", "update"];
            full.extend_from_slice(argv);
            Cli::try_parse_from(full).map(|c| match c.command {
                Command::Alerts(AlertsCommand::Update(a)) => a,
                _ => unreachable!(),
            })
        };
        let a = parse(&["a1", "a2", "--status", "resolved", "--comment", "done"]).unwrap();
        assert_eq!(a.ids, ["a1", "a2"]);
        assert_eq!(a.status.map(|s| s.as_str()), Some("Resolved"));
        let a = parse(&["a1", "--assign-to", ""]).unwrap();
        assert_eq!(a.assign_to.as_deref(), Some(""));
        assert!(parse(&["a1"]).is_err(), "nothing to change");
        assert!(parse(&["--status", "New"]).is_err(), "no id");
        assert!(parse(&["a1", "--status", "Unknown"]).is_err());
        assert_eq!(
            distinct_ids(&["a".into(), " b ".into(), "a".into(), "".into()]),
            ["a", "b"]
        );
    }
}
