//! One module per command group.

pub mod actions;
#[cfg(target_os = "linux")]
pub mod agent;
pub mod alerts;
pub mod app;
pub mod connect;
pub mod enroll_secret;
pub mod indicators;
pub mod keys;
pub mod login;
pub mod logout;
pub mod machines;
pub mod serve;
pub mod tenant;
pub mod tls;
pub mod user;

use std::io::Write;

use appfence_core::Tenant;
use appfence_proto::Collection;
use appfence_server::oauth::apps::ensure_default_tenant;
use appfence_server::oauth::tenants::resolve_tenant;
use appfence_store::Store;

use crate::args::{OfflineArgs, OutputFormat};
use crate::config::resolve_offline;
use crate::env::Env;
use crate::error::CliError;
use crate::output;
use crate::store::OpenStore;

/// What every command gets: the environment, where to print, and in which format.
pub struct Ctx<'a> {
    pub env: &'a Env,
    pub out: &'a mut (dyn Write + Send),
    pub format: OutputFormat,
}

/// Prints a collection; in table mode, says on stderr when more pages exist.
fn print_collection<T: serde::Serialize>(
    ctx: &mut Ctx<'_>,
    page: &Collection<T>,
    table: fn(&[T]) -> String,
) -> Result<(), CliError> {
    let text = match ctx.format {
        OutputFormat::Json => output::json(page),
        OutputFormat::Table => table(&page.value),
    };
    ctx.out.write_all(text.as_bytes())?;
    if ctx.format == OutputFormat::Table && page.odata_next_link.is_some() {
        eprintln!("(more results: raise --top or pass --all)");
    }
    Ok(())
}

/// The server's store (PostgreSQL if configured, else SQLite in the data directory),
/// found as `serve` finds it, for commands that work without a running server. Creates
/// the data directory (`0700`) and the SQLite database if needed; refuses them if
/// other users can reach them.
async fn open_data_dir_store(offline: &OfflineArgs, env: &Env) -> Result<OpenStore, CliError> {
    open_offline(offline, env).await.map(|(store, _)| store)
}

/// [`open_data_dir_store`], with the server configuration it was found with (its key
/// file, the keys' timing).
async fn open_offline(
    offline: &OfflineArgs,
    env: &Env,
) -> Result<(OpenStore, appfence_server::ServerConfig), CliError> {
    let (config, database_url) = resolve_offline(offline, env)?;
    let store = OpenStore::open(&config, database_url.as_ref()).await?;
    Ok((store, config))
}

/// Runs `work` on the store the offline arguments name, in their tenant, and closes the
/// store whatever happens.
pub(super) async fn with_store<T>(
    offline: &OfflineArgs,
    ctx: &Ctx<'_>,
    work: impl AsyncFnOnce(&dyn Store, Tenant) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let store = open_data_dir_store(offline, ctx.env).await?;
    let result = async {
        let tenant = tenant_or_default(&*store, offline.tenant.as_deref()).await?;
        work(&*store, tenant).await
    }
    .await;
    store.close().await;
    result
}

/// A store error of an offline command: what the input got wrong (a bad name, a short
/// password, no such thing) is a usage error; anything else a failure.
pub(super) fn failed(e: appfence_core::Error) -> CliError {
    match e {
        appfence_core::Error::BadRequest(m) | appfence_core::Error::ResourceNotFound(m) => {
            CliError::Usage(m)
        }
        other => CliError::Failed(other.to_string()),
    }
}

/// The tenant named by id or name, or the default tenant (created if there is none).
async fn tenant_or_default(store: &dyn Store, tenant: Option<&str>) -> Result<Tenant, CliError> {
    let failed = |e: appfence_core::Error| CliError::Failed(e.to_string());
    match tenant {
        Some(t) => resolve_tenant(store, t)
            .await
            .map_err(failed)?
            .ok_or_else(|| {
                CliError::Usage(format!("there is no tenant {t:?} (give its id or name)"))
            }),
        None => ensure_default_tenant(store).await.map_err(failed),
    }
}

/// Who a change made from the command line is recorded as in the audit log:
/// `cli:<login name of the effective user> (appfence <command>)`.
fn cli_actor(command: &str) -> String {
    format!("cli:{} (appfence {command})", login_name())
}

/// The effective user's login name, or `uid <n>` when the system has none for it.
#[cfg(unix)]
fn login_name() -> String {
    // SAFETY: getpwuid_r writes into the buffers given, which outlive the call; the
    // name it points at lives in `buf`, read before `buf` is dropped.
    unsafe {
        let uid = libc::geteuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned()
        } else {
            format!("uid {uid}")
        }
    }
}

#[cfg(not(unix))]
fn login_name() -> String {
    "unknown".into()
}

/// A time as tables show it: `2026-12-07 09:30:00` (UTC), or `-`.
fn table_time(t: Option<appfence_proto::Timestamp>) -> String {
    t.map_or("-".to_string(), |t| {
        t.to_string()
            .chars()
            .take(19)
            .collect::<String>()
            .replace('T', " ")
    })
}
