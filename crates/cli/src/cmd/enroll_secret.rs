//! `enroll-secret create|list|revoke`: a tenant's enrolment secrets, directly in the
//! server's store (the data directory's SQLite, or PostgreSQL); `appfence agent
//! --enroll-secret` takes one. A secret expires (30 days unless told otherwise), may be
//! good for a number of devices, and can be revoked.

use std::process::ExitCode;

use appfence_core::records::{EnrollSecret, EnrollSecretRefusal};
use appfence_core::{Clock, SystemClock};
use appfence_proto::Timestamp;
use appfence_server::agent_gateway::enroll::create_enroll_secret;
use serde::Serialize;

use super::{cli_actor, failed, table_time, with_store, Ctx};
use crate::args::{
    EnrollSecretCommand, EnrollSecretCreateArgs, EnrollSecretRevokeArgs, OfflineArgs, OutputFormat,
};
use crate::error::CliError;
use crate::output::{self, Table};

pub async fn run(cmd: &EnrollSecretCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        EnrollSecretCommand::Create(args) => create(args, ctx).await,
        EnrollSecretCommand::List(args) => list(&args.offline, ctx).await,
        EnrollSecretCommand::Revoke(args) => revoke(args, ctx).await,
    }
}

/// What `--output json` prints; the secret appears here and nowhere else.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEnrollSecret {
    pub tenant_id: String,
    pub tenant_name: String,
    pub id: String,
    pub enroll_secret: String,
    pub expires: Option<Timestamp>,
    pub max_uses: Option<u32>,
}

/// An enrolment secret as `list` prints it: never the secret nor its hash.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollSecretView {
    pub id: String,
    pub tenant_id: String,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub uses: u32,
    pub max_uses: Option<u32>,
    pub revoked: Option<Timestamp>,
    /// `Usable`, `Revoked`, `Expired` or `UsedUp`.
    pub state: &'static str,
}

fn view(s: &EnrollSecret, now: Timestamp) -> EnrollSecretView {
    EnrollSecretView {
        id: s.id.clone(),
        tenant_id: s.tenant_id.clone(),
        created: s.created,
        expires: s.expires,
        uses: s.uses,
        max_uses: s.max_uses,
        revoked: s.revoked,
        state: match s.usable(now) {
            Ok(()) => "Usable",
            Err(EnrollSecretRefusal::Revoked) => "Revoked",
            Err(EnrollSecretRefusal::Expired) => "Expired",
            Err(EnrollSecretRefusal::UsedUp) => "UsedUp",
        },
    }
}

const SECRET_WARNING: &str =
    "Save the enrolment secret now: only its hash is stored, it cannot be shown again.";

async fn create(args: &EnrollSecretCreateArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let created = with_store(&args.offline, ctx, async |store, tenant| {
        let (record, secret) = create_enroll_secret(
            store,
            &SystemClock,
            &tenant.id,
            args.expires.0,
            args.max_uses,
            &cli_actor("enroll-secret create"),
        )
        .await
        .map_err(failed)?;
        Ok(CreatedEnrollSecret {
            tenant_id: tenant.id,
            tenant_name: tenant.name,
            id: record.id,
            enroll_secret: secret,
            expires: record.expires,
            max_uses: record.max_uses,
        })
    })
    .await?;
    match ctx.format {
        OutputFormat::Json => {
            ctx.out.write_all(output::json(&created).as_bytes())?;
            eprintln!("{SECRET_WARNING}");
        }
        OutputFormat::Table => {
            let text = format!(
                "Created an enrolment secret for tenant {:?}.\n\n{}\n{SECRET_WARNING}\n\
                 Enrol a Linux host with: appfence agent --server URL --enroll-secret SECRET\n",
                created.tenant_name,
                output::details(&[
                    ("tenant id", created.tenant_id.clone()),
                    ("id", created.id.clone()),
                    ("enrolment secret", created.enroll_secret.clone()),
                    (
                        "expires",
                        created
                            .expires
                            .map_or("never".into(), |t| table_time(Some(t))),
                    ),
                    (
                        "devices",
                        created
                            .max_uses
                            .map_or("any number".into(), |m| format!("at most {m}")),
                    ),
                ]),
            );
            ctx.out.write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(offline: &OfflineArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let now = SystemClock.now();
    let views = with_store(offline, ctx, async |store, tenant| {
        Ok(store
            .enroll_secrets(&tenant.id)
            .await
            .map_err(failed)?
            .iter()
            .map(|s| view(s, now))
            .collect::<Vec<_>>())
    })
    .await?;
    let text = match ctx.format {
        OutputFormat::Json => output::json(&views),
        OutputFormat::Table if views.is_empty() => {
            "No enrolment secrets yet: `appfence enroll-secret create` makes one.\n".to_string()
        }
        OutputFormat::Table => {
            let mut t = Table::new(vec![
                "ID",
                "STATE",
                "CREATED (UTC)",
                "EXPIRES (UTC)",
                "USES",
                "REVOKED (UTC)",
            ]);
            for v in &views {
                t.push(vec![
                    v.id.clone(),
                    v.state.to_string(),
                    table_time(Some(v.created)),
                    v.expires.map_or("never".into(), |e| table_time(Some(e))),
                    match v.max_uses {
                        Some(m) => format!("{}/{m}", v.uses),
                        None => v.uses.to_string(),
                    },
                    table_time(v.revoked),
                ]);
            }
            t.render()
        }
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn revoke(args: &EnrollSecretRevokeArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let id = args.id.trim().to_ascii_lowercase();
    let (before, after) = with_store(&args.offline, ctx, async |store, tenant| {
        let before = store
            .enroll_secrets(&tenant.id)
            .await
            .map_err(failed)?
            .into_iter()
            .find(|s| s.id == id);
        let after = store
            .revoke_enroll_secret(
                &tenant.id,
                &id,
                &cli_actor("enroll-secret revoke"),
                SystemClock.now(),
            )
            .await
            .map_err(failed)?
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "there is no enrolment secret {:?} in tenant {:?} (`appfence \
                     enroll-secret list` shows them)",
                    args.id, tenant.name
                ))
            })?;
        Ok((before, after))
    })
    .await?;
    let changed = before.is_some_and(|b| b.revoked.is_none());
    let text = match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "id": after.id,
            "revoked": after.revoked,
            "changed": changed,
        })),
        OutputFormat::Table if changed => format!(
            "Revoked enrolment secret {}: it enrols no device any more; the {} device(s) it \
             enrolled keep their own credentials.\n",
            after.id, after.uses
        ),
        OutputFormat::Table => format!(
            "Enrolment secret {} was revoked already (at {}).\n",
            after.id,
            table_time(after.revoked)
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{run_with, Cli, Env};
    use appfence_server::oauth::secrets::sha256_hex;
    use appfence_store::Store;
    use clap::Parser;

    async fn cli(argv: &[&str]) -> (Result<ExitCode, CliError>, String) {
        let cli = Cli::try_parse_from(argv).expect("valid arguments");
        let mut out = Vec::new();
        let r = run_with(cli, &Env::default(), &mut out).await;
        (r, String::from_utf8(out).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn creates_a_secret_the_gateway_accepts() {
        let dir = crate::tests::private_tempdir();
        let data = dir.path().to_str().unwrap();
        let (r, out) = cli(&[
            "appfence",
            "-o",
            "json",
            "enroll-secret",
            "create",
            "--data-dir",
            data,
        ])
        .await;
        assert_eq!(r.unwrap(), ExitCode::SUCCESS);
        let created: serde_json::Value = serde_json::from_str(&out).unwrap();
        let secret = created["enrollSecret"].as_str().unwrap();
        assert!(secret.len() >= 32, "{out}");

        let store = appfence_store::SqliteStore::open(&dir.path().join(crate::config::DB_FILE))
            .await
            .unwrap();
        let stored = store.enroll_secret(&sha256_hex(secret)).await.unwrap();
        store.close().await;
        let stored = stored.expect("the secret's hash is stored");
        assert_eq!(stored.tenant_id, created["tenantId"].as_str().unwrap());
        // 30 days by default, any number of devices.
        assert_eq!(
            stored.expires,
            Some(
                stored
                    .created
                    .plus(std::time::Duration::from_secs(30 * 86_400))
            )
        );
        assert_eq!(
            (stored.max_uses, stored.uses, stored.revoked),
            (None, 0, None)
        );
        assert_eq!(created["id"], stored.id.as_str());

        // Listed (never the secret), revoked once, listed as revoked.
        let (r, out) = cli(&[
            "appfence",
            "-o",
            "json",
            "enroll-secret",
            "list",
            "--data-dir",
            data,
        ])
        .await;
        assert_eq!(r.unwrap(), ExitCode::SUCCESS);
        assert!(
            !out.contains(secret) && !out.contains(&stored.secret_sha256),
            "{out}"
        );
        let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(listed[0]["state"], "Usable");
        for changed in [true, false] {
            let (r, out) = cli(&[
                "appfence",
                "-o",
                "json",
                "enroll-secret",
                "revoke",
                &stored.id,
                "--data-dir",
                data,
            ])
            .await;
            assert_eq!(r.unwrap(), ExitCode::SUCCESS);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["changed"], changed, "{out}");
        }
        let (_, out) = cli(&["appfence", "enroll-secret", "list", "--data-dir", data]).await;
        assert!(out.starts_with("ID"), "{out}");
        assert!(out.contains("Revoked"), "{out}");
        let (r, _) = cli(&[
            "appfence",
            "enroll-secret",
            "revoke",
            "nope",
            "--data-dir",
            data,
        ])
        .await;
        assert!(matches!(r, Err(CliError::Usage(_))));

        let (r, out) = cli(&["appfence", "enroll-secret", "create", "--data-dir", data]).await;
        assert_eq!(r.unwrap(), ExitCode::SUCCESS);
        assert!(out.contains("enrolment secret") && out.contains("cannot be shown again"));
        let (r, _) = cli(&[
            "appfence",
            "enroll-secret",
            "create",
            "--tenant",
            "nope",
            "--data-dir",
            data,
        ])
        .await;
        assert!(matches!(r, Err(CliError::Usage(_))));
    }
}
