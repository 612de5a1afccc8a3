//! Command-line options. Only a handful, so parsed by hand.

use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: appfence-bench [--quick] [--devices N] [--concurrency N] [--dir PATH]

  --quick          small counts and short rounds: a smoke run of a few seconds
  --devices N      devices per creation method (default 2000; 200 with --quick)
  --concurrency N  concurrent client tasks (default 16)
  --dir PATH       where the temporary databases go (default: the system temp dir)";

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub quick: bool,
    /// Devices (so actions) per creation method.
    pub devices: usize,
    pub concurrency: usize,
    /// Interleaved rounds of the creation measurement.
    pub creation_rounds: usize,
    /// Interleaved rounds of the read measurement, and how long each kind runs per round.
    pub read_rounds: usize,
    pub read_round: Duration,
    /// Interleaved rounds of the access measurement, and how long each kind runs per
    /// round.
    pub access_rounds: usize,
    pub access_round: Duration,
    pub dir: Option<PathBuf>,
}

impl Options {
    fn defaults(quick: bool) -> Options {
        Options {
            quick,
            devices: if quick { 200 } else { 2000 },
            concurrency: 16,
            // Multiples of the number of kinds measured in each (4), so that every kind
            // runs in every position of a round equally often.
            creation_rounds: if quick { 4 } else { 8 },
            read_rounds: if quick { 4 } else { 8 },
            read_round: if quick {
                Duration::from_millis(250)
            } else {
                Duration::from_millis(1500)
            },
            // One round per kind, for the same reason.
            access_rounds: crate::access::KINDS,
            access_round: if quick {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(800)
            },
            dir: None,
        }
    }

    /// `Ok(None)` when help was asked for.
    pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = Options::defaults(quick);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => {}
                "-h" | "--help" => return Ok(None),
                "--devices" => o.devices = positive(&value("--devices")?, "--devices")?,
                "--concurrency" => {
                    o.concurrency = positive(&value("--concurrency")?, "--concurrency")?
                }
                "--dir" => o.dir = Some(PathBuf::from(value("--dir")?)),
                other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
            }
        }
        Ok(Some(o))
    }
}

fn positive(v: &str, name: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} wants a positive whole number, not '{v}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        Options::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn quick_shrinks_the_defaults_and_flags_override_them() {
        let full = parse(&[]).unwrap().unwrap();
        assert_eq!(
            (full.devices, full.concurrency, full.quick),
            (2000, 16, false)
        );
        // Order does not matter: --quick sets defaults, explicit values win.
        let o = parse(&["--devices", "50", "--quick", "--dir", "/x"])
            .unwrap()
            .unwrap();
        assert!(o.quick);
        assert_eq!(o.devices, 50);
        assert_eq!(o.read_rounds, 4);
        assert!(o.access_round < full.access_round);
        assert_eq!(o.dir, Some(PathBuf::from("/x")));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["--devices"]).is_err());
        assert!(parse(&["--devices", "0"]).is_err());
        assert!(parse(&["--concurrency", "x"]).is_err());
        assert!(parse(&["--fast"]).unwrap_err().contains("unknown argument"));
        assert_eq!(parse(&["--help"]).unwrap(), None);
    }
}
