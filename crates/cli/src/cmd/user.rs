//! `user create|list|disable|enable|delete|set-password|set-groups|unlock`: local users
//! of the built-in token endpoint, directly in the server's store (the data directory's
//! SQLite, or PostgreSQL). Passwords come from standard input, never from the command
//! line, and are never printed.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use appfence_core::records::UserRecord;
use appfence_core::{Clock, Error, SystemClock};
use appfence_proto::Timestamp;
use appfence_server::oauth::principal_state::STATE_TTL;
use appfence_server::oauth::users::{self, create_user_as};
use appfence_store::Store;
use serde::Serialize;

use super::{
    cli_actor, failed, open_data_dir_store, table_time, tenant_or_default, with_store, Ctx,
};
use crate::args::{
    OfflineArgs, OutputFormat, UserCommand, UserCreateArgs, UserRefArgs, UserSetGroupsArgs,
    UserSetPasswordArgs, UserUnlockArgs,
};
use crate::error::CliError;
use crate::output::{self, Table};

pub async fn run(cmd: &UserCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        UserCommand::Create(args) => {
            let password = password_from_stdin()?;
            create(args, &password, ctx).await
        }
        UserCommand::Unlock(args) => unlock(args, ctx).await,
        UserCommand::List(args) => list(&args.offline, ctx).await,
        UserCommand::Disable(args) => set_disabled(args, true, ctx).await,
        UserCommand::Enable(args) => set_disabled(args, false, ctx).await,
        UserCommand::Delete(args) => delete(args, ctx).await,
        UserCommand::SetPassword(args) => {
            let password = password_from_stdin()?;
            set_password(args, &password, ctx).await
        }
        UserCommand::SetGroups(args) => set_groups(args, ctx).await,
    }
}

fn password_from_stdin() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Password (one line, at least 12 characters):");
    }
    read_password(&mut stdin.lock())
}

/// A user as `list` prints it: never the password hash.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub tenant_id: String,
    pub object_id: String,
    pub upn: String,
    /// `Enabled` or `Disabled`.
    pub state: &'static str,
    pub disabled: Option<Timestamp>,
    pub groups: Vec<String>,
    pub created: Timestamp,
}

fn user_view(u: &UserRecord) -> UserView {
    UserView {
        tenant_id: u.tenant_id.clone(),
        object_id: u.object_id.clone(),
        upn: u.upn.clone(),
        state: if u.disabled.is_some() {
            "Disabled"
        } else {
            "Enabled"
        },
        disabled: u.disabled,
        groups: u.groups.clone(),
        created: u.created,
    }
}

async fn list(offline: &OfflineArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let views = with_store(offline, ctx, async |store, tenant| {
        Ok(store
            .users(&tenant.id)
            .await
            .map_err(failed)?
            .iter()
            .map(user_view)
            .collect::<Vec<_>>())
    })
    .await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&views),
        OutputFormat::Table if views.is_empty() => {
            "No users yet: `appfence user create --upn UPN --password-stdin --group G` adds one.\n"
                .to_string()
        }
        OutputFormat::Table => {
            let mut t = Table::new(vec!["UPN", "OBJECT ID", "STATE", "CREATED (UTC)", "GROUPS"]);
            for v in &views {
                t.push(vec![
                    v.upn.clone(),
                    v.object_id.clone(),
                    v.state.to_string(),
                    table_time(Some(v.created)),
                    v.groups.join(", "),
                ]);
            }
            t.render()
        }
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn set_disabled(
    args: &UserRefArgs,
    disabled: bool,
    ctx: &mut Ctx<'_>,
) -> Result<ExitCode, CliError> {
    let command = if disabled {
        "user disable"
    } else {
        "user enable"
    };
    let (before, after) = with_store(&args.offline, ctx, async |store, tenant| {
        let before = store
            .user(&tenant.id, args.upn.trim())
            .await
            .map_err(failed)?;
        let after = users::set_disabled(
            store,
            &SystemClock,
            &tenant.id,
            &args.upn,
            disabled,
            &cli_actor(command),
        )
        .await
        .map_err(failed)?;
        Ok((before, after))
    })
    .await?;
    let changed = before.is_some_and(|b| b.disabled.is_some() != after.disabled.is_some());
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "upn": after.upn,
            "objectId": after.object_id,
            "state": user_view(&after).state,
            "disabled": after.disabled,
            "changed": changed,
        })),
        OutputFormat::Table => match (disabled, changed) {
            (true, true) => format!(
                "Disabled {}: sign-ins are refused from now on, their console sessions are \
                 over, and their tokens are refused by every server within {} s.\n",
                after.upn,
                STATE_TTL.as_secs()
            ),
            (true, false) => format!("{} was disabled already.\n", after.upn),
            (false, true) => format!("Enabled {}: they can sign in again.\n", after.upn),
            (false, false) => format!("{} was enabled already.\n", after.upn),
        },
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn delete(args: &UserRefArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let upn = args.upn.trim().to_lowercase();
    with_store(&args.offline, ctx, async |store, tenant| {
        users::delete(
            store,
            &SystemClock,
            &tenant.id,
            &upn,
            &cli_actor("user delete"),
        )
        .await
        .map_err(failed)
    })
    .await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({ "upn": upn, "deleted": true })),
        OutputFormat::Table => format!(
            "Deleted {upn}: sign-ins are refused from now on, their console sessions are over, \
             and their tokens are refused by every server within {} s.\n",
            STATE_TTL.as_secs()
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Gives the user `password` and prints what happened (never the password).
pub async fn set_password(
    args: &UserSetPasswordArgs,
    password: &str,
    ctx: &mut Ctx<'_>,
) -> Result<ExitCode, CliError> {
    let upn = args.upn.trim().to_lowercase();
    with_store(&args.offline, ctx, async |store, tenant| {
        users::set_password(
            store,
            &SystemClock,
            &tenant.id,
            &upn,
            password,
            &cli_actor("user set-password"),
        )
        .await
        .map_err(failed)
    })
    .await?;
    let text = match ctx.format {
        OutputFormat::Json => {
            output::json(&serde_json::json!({ "upn": upn, "passwordChanged": true }))
        }
        OutputFormat::Table => format!(
            "Changed the password of {upn}; their console sessions are over. Tokens they \
             already hold work until they expire (disable the user to stop them).\n"
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn set_groups(args: &UserSetGroupsArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let user = with_store(&args.offline, ctx, async |store, tenant| {
        users::set_groups(
            store,
            &SystemClock,
            &tenant.id,
            &args.upn,
            &args.groups,
            &cli_actor("user set-groups"),
        )
        .await
        .map_err(failed)
    })
    .await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&user_view(&user)),
        OutputFormat::Table => format!(
            "{} is now in: {}. Their console sessions are over; their tokens carry the new \
             groups within {} s.\n",
            user.upn,
            user.groups.join(", "),
            STATE_TTL.as_secs()
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The actor recorded in the audit log for an unlock from the command line.
const UNLOCK_ACTOR: &str = "appfence user unlock";

/// Ends the user's sign-in lockout (and forgets the failures counted so far).
async fn unlock(args: &UserUnlockArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let store = open_data_dir_store(&args.offline, ctx.env).await?;
    let result = async {
        let tenant = tenant_or_default(&*store, args.offline.tenant.as_deref()).await?;
        let account = appfence_core::sign_in_throttle::SignInAccount::new(&tenant.id, &args.upn);
        let was_locked = store
            .unlock_account(&account, UNLOCK_ACTOR, SystemClock.now())
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        Ok::<_, CliError>((account, was_locked))
    }
    .await;
    store.close().await;
    let (account, was_locked) = result?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "upn": account.name,
            "tenantId": account.tenant_id,
            "wasLocked": was_locked,
        })),
        OutputFormat::Table if was_locked => format!(
            "Unlocked {}: the lockout is over and its failed sign-ins are forgotten.\n",
            account.name
        ),
        OutputFormat::Table => format!(
            "{} was not locked; its failed sign-ins, if any, are forgotten.\n",
            account.name
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// What `--output json` prints: everything but the password.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedUser {
    pub tenant_id: String,
    pub tenant_name: String,
    pub object_id: String,
    pub upn: String,
    pub groups: Vec<String>,
}

/// The first line of `input` without its line ending; an empty one is refused.
pub fn read_password(input: &mut dyn BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| CliError::Failed(format!("cannot read the password from stdin: {e}")))?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if password.is_empty() {
        return Err(CliError::Usage(
            "no password on standard input; pipe it in, e.g. \
             printf '%s\\n' \"$PASSWORD\" | appfence user create --password-stdin ..."
                .into(),
        ));
    }
    Ok(password.to_string())
}

/// Creates the user with `password`, and prints what was created.
pub async fn create(
    args: &UserCreateArgs,
    password: &str,
    ctx: &mut Ctx<'_>,
) -> Result<ExitCode, CliError> {
    let store = open_data_dir_store(&args.offline, ctx.env).await?;
    let created = add(&*store, args, password).await;
    store.close().await;
    let created = created?;

    let text = match ctx.format {
        OutputFormat::Json => output::json(&created),
        OutputFormat::Table => format!(
            "Created user {:?} in tenant {:?}.\n\n{}\n\
             Get tokens from POST <server>/{}/oauth2/token with grant_type=password, \
             username, password, resource and a registered application's client_id.\n",
            created.upn,
            created.tenant_name,
            output::details(&[
                ("tenant id", created.tenant_id.clone()),
                ("object id", created.object_id.clone()),
                ("upn", created.upn.clone()),
                ("groups", created.groups.join(", ")),
            ]),
            created.tenant_id,
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn add(
    store: &dyn Store,
    args: &UserCreateArgs,
    password: &str,
) -> Result<CreatedUser, CliError> {
    let tenant = tenant_or_default(store, args.offline.tenant.as_deref()).await?;
    let user = create_user_as(
        store,
        &SystemClock,
        &tenant.id,
        &args.upn,
        password,
        &args.groups,
        &cli_actor("user create"),
    )
    .await
    .map_err(|e| match e {
        // A bad name, a short password, an empty group or a taken UPN: the input is wrong.
        Error::BadRequest(m) => CliError::Usage(m),
        other => CliError::Failed(other.to_string()),
    })?;
    Ok(CreatedUser {
        tenant_id: tenant.id,
        tenant_name: tenant.name,
        object_id: user.object_id,
        upn: user.upn,
        groups: user.groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Env;
    use appfence_store::Store;

    fn read(input: &str) -> Result<String, CliError> {
        read_password(&mut input.as_bytes())
    }

    #[test]
    fn the_password_is_the_first_line_without_its_ending() {
        assert_eq!(read("s3cret pass\n").unwrap(), "s3cret pass");
        assert_eq!(read("s3cret pass\r\nsecond line\n").unwrap(), "s3cret pass");
        assert_eq!(read("no newline").unwrap(), "no newline");
        // Spaces are part of the password.
        assert_eq!(read("  padded  \n").unwrap(), "  padded  ");
        for empty in ["", "\n", "\r\n"] {
            let e = read(empty).unwrap_err();
            assert_eq!(e.exit_code(), ExitCode::from(2));
            assert!(
                e.to_string().contains("no password on standard input"),
                "{e}"
            );
        }
    }

    fn args(data_dir: &std::path::Path, upn: &str, groups: &[&str]) -> UserCreateArgs {
        UserCreateArgs {
            upn: upn.into(),
            password_stdin: true,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            offline: crate::args::OfflineArgs {
                tenant: None,
                data_dir: Some(data_dir.to_path_buf()),
                config: None,
                key_file: None,
                allow_group_read: false,
                database_url: None,
            },
        }
    }

    async fn run_create(
        args: &UserCreateArgs,
        password: &str,
        format: OutputFormat,
    ) -> (Result<ExitCode, CliError>, String) {
        let env = Env::default();
        let mut out = Vec::new();
        let mut ctx = Ctx {
            env: &env,
            out: &mut out,
            format,
        };
        let r = create(args, password, &mut ctx).await;
        (r, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn users_are_created_in_the_data_dir_and_the_password_is_never_printed() {
        let dir = crate::tests::private_tempdir();
        let password = "correct horse battery";
        let (r, out) = run_create(
            &args(dir.path(), "Ana@Example.com", &["tier2", "servers"]),
            password,
            OutputFormat::Json,
        )
        .await;
        assert_eq!(r.unwrap(), ExitCode::SUCCESS);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["upn"], "ana@example.com");
        assert_eq!(json["groups"], serde_json::json!(["tier2", "servers"]));
        assert_eq!(json["tenantName"], "default");
        assert!(!out.contains(password));

        let store = appfence_store::SqliteStore::open(&dir.path().join(crate::config::DB_FILE))
            .await
            .unwrap();
        let tenant_id = json["tenantId"].as_str().unwrap();
        let user = store
            .user(tenant_id, "ana@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(user.object_id, json["objectId"].as_str().unwrap());
        store.close().await;

        let (r, out) = run_create(
            &args(dir.path(), "bo@example.com", &["viewers"]),
            password,
            OutputFormat::Table,
        )
        .await;
        assert_eq!(r.unwrap(), ExitCode::SUCCESS);
        assert!(out.contains("upn        bo@example.com"), "{out}");
        assert!(out.contains("groups     viewers"), "{out}");
        assert!(out.contains(&format!("/{tenant_id}/oauth2/token")), "{out}");
        assert!(!out.contains(password));
    }

    #[tokio::test]
    async fn bad_input_is_a_usage_error() {
        let dir = crate::tests::private_tempdir();
        let (r, out) = run_create(
            &args(dir.path(), "ana@example.com", &["g"]),
            "short",
            OutputFormat::Table,
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::from(2));
        assert!(e.to_string().contains("at least 12 characters"), "{e}");
        assert!(out.is_empty());

        let ok = args(dir.path(), "ana@example.com", &["g"]);
        let password = "correct horse battery";
        assert!(run_create(&ok, password, OutputFormat::Table)
            .await
            .0
            .is_ok());
        let e = run_create(&ok, password, OutputFormat::Table)
            .await
            .0
            .unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::from(2));
        assert!(e.to_string().contains("already exists"), "{e}");

        let mut elsewhere = args(dir.path(), "bo@example.com", &["g"]);
        elsewhere.offline.tenant = Some("nope".into());
        let e = run_create(&elsewhere, password, OutputFormat::Table)
            .await
            .0
            .unwrap_err();
        assert!(e.to_string().contains("no tenant \"nope\""), "{e}");
    }
}
