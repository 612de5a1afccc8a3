//! The CLI's error: what to print after `error: ` and which exit code to use.

use std::fmt;
use std::process::ExitCode;

use appfence_client::ClientError;

#[derive(Debug)]
pub enum CliError {
    /// Wrong or missing settings (flags, environment, config file): exit code 2, as for
    /// clap's own usage errors.
    Usage(String),
    /// The server refused or could not be reached: exit code 1.
    Client(ClientError),
    /// Anything else that stops the command: exit code 1.
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
            CliError::Client(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CliError {}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Client(e)
    }
}

impl From<std::io::Error> for CliError {
    /// Only writes to stdout fail this way (e.g. a closed pipe).
    fn from(e: std::io::Error) -> Self {
        CliError::Failed(format!("cannot write output: {e}"))
    }
}
