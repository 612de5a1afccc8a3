//! `user create`: adds a local user of the built-in token endpoint directly in the data
//! directory's database. The password comes from standard input, never from the
//! command line, and is never printed.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use appfence_core::{Clock, Error, SystemClock};
use appfence_server::oauth::users::create_user;
use appfence_store::Store;
use serde::Serialize;

use super::{open_data_dir_store, tenant_or_default, Ctx};
use crate::args::{OutputFormat, UserCommand, UserCreateArgs, UserUnlockArgs};
use crate::error::CliError;
use crate::output;

pub async fn run(cmd: &UserCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        UserCommand::Create(args) => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Password (one line, at least 12 characters):");
            }
            let password = read_password(&mut stdin.lock())?;
            create(args, &password, ctx).await
        }
        UserCommand::Unlock(args) => unlock(args, ctx).await,
    }
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
    let user = create_user(
        store,
        &SystemClock,
        &tenant.id,
        &args.upn,
        password,
        &args.groups,
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
