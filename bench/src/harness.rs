//! The frame of a benchmark binary: its options (or its usage), then one run under a
//! time limit whose report goes to stdout, or whose failure ends the process non-zero.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// Parses the arguments with `parse`: `Ok` with the options and the arguments, or
/// `Err` with the exit code after printing the usage (asked for) or the error.
pub fn options<O>(
    usage: &str,
    parse: impl FnOnce(&[String]) -> Result<Option<O>, String>,
) -> Result<(O, Vec<String>), ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Some(o)) => Ok((o, args)),
        Ok(None) => {
            println!("{usage}");
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(2))
        }
    }
}

/// Runs `run` for at most `limit`; prints its report, or says why there is none.
pub async fn report_within(
    name: &str,
    limit: Duration,
    run: impl Future<Output = Result<String, String>>,
) -> ExitCode {
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(report)) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("{name} failed: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{name} stopped: it ran longer than {limit:?}");
            ExitCode::FAILURE
        }
    }
}
