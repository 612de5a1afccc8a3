//! `tls init`: a lab CA and a server certificate, written as files, with the commands
//! that use them.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::process::ExitCode;

use super::Ctx;
use crate::args::{OutputFormat, TlsCommand, TlsInitArgs};
use crate::error::CliError;

pub fn run(cmd: &TlsCommand, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    match cmd {
        TlsCommand::Init(args) => init(args, ctx),
    }
}

/// Creates `path` with `mode`; never replaces an existing file.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CliError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            CliError::Failed(match e.kind() {
                std::io::ErrorKind::AlreadyExists => format!(
                    "{} exists already: tls init never overwrites (choose another --out)",
                    path.display()
                ),
                _ => format!("cannot create {}: {e}", path.display()),
            })
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}

fn init(args: &TlsInitArgs, ctx: &mut Ctx<'_>) -> Result<ExitCode, CliError> {
    use appfence_core::Clock;
    let now = appfence_core::SystemClock.now().to_offset_date_time();
    let lab = appfence_tls::lab::generate(&args.hosts, args.days, now).map_err(CliError::Usage)?;
    let dir = &args.out;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let names = ["ca.pem", "ca.key", "server.pem", "server.key"];
    if let Some(existing) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
        return Err(CliError::Failed(format!(
            "{} exists already: tls init never overwrites (choose another --out)",
            existing.display()
        )));
    }
    // The whole chain in server.pem: clients that know only the CA can verify it.
    let chain = format!("{}{}", lab.server_cert, lab.ca_cert);
    write_new(&dir.join("ca.pem"), &lab.ca_cert, 0o644)?;
    write_new(&dir.join("ca.key"), &lab.ca_key, 0o600)?;
    write_new(&dir.join("server.pem"), &chain, 0o644)?;
    write_new(&dir.join("server.key"), &lab.server_key, 0o600)?;
    let d = dir.display();
    let host = &args.hosts[0];
    let text = match ctx.format {
        OutputFormat::Json => format!(
            "{}\n",
            serde_json::json!({
                "caCert": dir.join("ca.pem"),
                "caKey": dir.join("ca.key"),
                "serverCert": dir.join("server.pem"),
                "serverKey": dir.join("server.key"),
                "hosts": args.hosts,
                "notAfter": lab.not_after.date().to_string(),
                "serverKeySha256": lab.server_key_sha256,
            })
        ),
        OutputFormat::Table => format!(
            "Wrote a lab CA and a certificate for {hosts} (valid until {until}):\n\
             \x20 {d}/ca.pem       the CA certificate: give it to agents and the CLI (--ca-file)\n\
             \x20 {d}/ca.key       the CA's key (0600): keep it offline, it can sign for any name\n\
             \x20 {d}/server.pem   the server's certificate (and the CA after it)\n\
             \x20 {d}/server.key   its key (0600)\n\
             \n\
             Server:\n\
             \x20 appfence serve --tls-cert {d}/server.pem --tls-key {d}/server.key \\\n\
             \x20   --listen 0.0.0.0:8443 --public-url https://{host}:8443\n\
             Agents:\n\
             \x20 appfence agent --server https://{host}:8443 --ca-file {d}/ca.pem --enroll-secret ...\n\
             CLI:\n\
             \x20 APPFENCE_SERVER=https://{host}:8443 APPFENCE_CA_FILE={d}/ca.pem appfence machines list\n\
             To pin the server's key as well: --server-key-sha256 {pin}\n",
            hosts = args.hosts.join(", "),
            until = lab.not_after.date(),
            pin = lab.server_key_sha256,
        ),
    };
    ctx.out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
