//! `enroll-secret create`: a tenant's enrolment secret, written directly in the data
//! directory's database; `appfence agent --enroll-secret` takes it.

use std::process::ExitCode;

use appfence_core::records::EnrollSecret;
use appfence_core::{Clock, SystemClock};
use appfence_server::oauth::secrets::{generate_secret, sha256_hex};
use appfence_store::Store;
use serde::Serialize;

use super::{open_data_dir_store, tenant_or_default, Ctx};
use crate::args::{EnrollSecretCommand, EnrollSecretCreateArgs, OutputFormat};
use crate::error::CliError;
use crate::output;

pub async fn run(cmd: &EnrollSecretCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        EnrollSecretCommand::Create(args) => create(args, ctx).await,
    }
}

/// What `--output json` prints; the secret appears here and nowhere else.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEnrollSecret {
    pub tenant_id: String,
    pub tenant_name: String,
    pub enroll_secret: String,
}

const SECRET_WARNING: &str =
    "Save the enrolment secret now: only its hash is stored, it cannot be shown again.";

async fn create(args: &EnrollSecretCreateArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    let store = open_data_dir_store(&args.offline, ctx.env).await?;
    let created = insert(&*store, args.offline.tenant.as_deref()).await;
    store.close().await;
    let created = created?;
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
                    ("enrolment secret", created.enroll_secret.clone()),
                ]),
            );
            ctx.out.write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn insert(store: &dyn Store, tenant: Option<&str>) -> Result<CreatedEnrollSecret, CliError> {
    let tenant = tenant_or_default(store, tenant).await?;
    let secret = generate_secret();
    store
        .insert_enroll_secret(&EnrollSecret {
            tenant_id: tenant.id.clone(),
            secret_sha256: sha256_hex(&secret),
            created: SystemClock.now(),
        })
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(CreatedEnrollSecret {
        tenant_id: tenant.id,
        tenant_name: tenant.name,
        enroll_secret: secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{run_with, Cli, Env};
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
