//! The `appfence` command: argument parsing (`args`), settings (`config`), and one
//! module per command group (`cmd`). `main.rs` only calls [`run`]; tests call
//! [`run_with`] to supply the environment and capture the output.

pub mod access_config;
pub mod args;
pub mod cmd;
pub mod config;
pub mod duration;
pub mod env;
pub mod error;
pub mod indicator_csv;
pub mod log_writer;
pub mod output;
pub mod parse;
pub mod store;
pub mod tls_client;
pub mod token_cache;

use std::io::Write;
use std::process::ExitCode;

pub use args::Cli;
pub use env::Env;
pub use error::CliError;

use args::Command;
use cmd::actions::Kind;
use cmd::Ctx;

/// Runs a parsed command line with the process environment, printing to stdout.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let env = Env::from_process();
    let mut stdout = std::io::stdout();
    run_with(cli, &env, &mut stdout).await
}

/// Runs a parsed command line. `Ok` carries the exit code of a command that ran
/// (1 for `--wait` on an action that did not succeed); `Err` is printed by the caller as
/// `error: ...` with [`CliError::exit_code`].
pub async fn run_with(
    cli: Cli,
    env: &Env,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, CliError> {
    let mut ctx = Ctx {
        env,
        out,
        format: cli.output,
    };
    let code = match &cli.command {
        Command::Serve(args) => cmd::serve::run(args, &mut ctx).await?,
        Command::App(c) => cmd::app::run(c, &mut ctx).await?,
        Command::User(c) => cmd::user::run(c, &mut ctx).await?,
        Command::Login(args) => cmd::login::run(args, &mut ctx).await?,
        Command::Logout(args) => cmd::logout::run(args, &mut ctx).await?,
        Command::Restrict(args) => cmd::actions::submit(Kind::Restrict, args, &mut ctx).await?,
        Command::Unrestrict(args) => cmd::actions::submit(Kind::Unrestrict, args, &mut ctx).await?,
        Command::Actions(c) => cmd::actions::run(c, &mut ctx).await?,
        Command::Machines(c) => cmd::machines::run(c, &mut ctx).await?,
        Command::Indicators(c) => cmd::indicators::run(c, &mut ctx).await?,
        Command::Alerts(c) => cmd::alerts::run(c, &mut ctx).await?,
        #[cfg(target_os = "linux")]
        Command::Agent(args) => cmd::agent::run(args, &mut ctx).await?,
        #[cfg(not(target_os = "linux"))]
        Command::Agent(_) => {
            return Err(CliError::Usage(
                "appfence agent enforces with fanotify and runs on Linux only".into(),
            ))
        }
        Command::EnrollSecret(c) => cmd::enroll_secret::run(c, &mut ctx).await?,
        Command::Keys(c) => cmd::keys::run(c, &mut ctx).await?,
        Command::Tls(c) => cmd::tls::run(c, &mut ctx)?,
        Command::Tenant(c) => cmd::tenant::run(c, &mut ctx).await?,
    };
    ctx.out.flush()?;
    Ok(code)
}

#[cfg(test)]
mod tests;
