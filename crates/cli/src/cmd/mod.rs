//! One module per command group.

pub mod actions;
pub mod app;
pub mod connect;
pub mod machines;
pub mod serve;

use std::io::Write;

use appfence_proto::Collection;

use crate::args::OutputFormat;
use crate::env::Env;
use crate::error::CliError;
use crate::output;

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
