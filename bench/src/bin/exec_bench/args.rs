//! Command-line options, parsed by hand (a handful of flags).

use std::time::Duration;

pub const USAGE: &str = "\
usage: exec_bench [--quick] [--execs N] [--rounds N] [--apply-rounds N]
                  [--no-fapolicyd] [--fapolicyd-integrity none|size|sha256]

Run as root. Every case runs in a private mount and PID namespace on a private tmpfs;
only that tmpfs is marked (fapolicyd: mount marks inside the namespace only).

  --quick                 small counts: a smoke run of well under a minute
  --execs N               executions per measurement (default 2000; 300 with --quick)
  --rounds N              interleaved rounds they are split into (default 10; 4 with --quick)
  --apply-rounds N        rounds of the apply-time measurement (default 6; 2 with --quick)
  --no-fapolicyd          leave fapolicyd out
  --fapolicyd-integrity I fapolicyd's integrity setting (default sha256: like appfence, a
                          modified file at a trusted path is refused)";

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub quick: bool,
    pub execs: usize,
    pub rounds: usize,
    pub apply_rounds: usize,
    pub fapolicyd: bool,
    pub fapolicyd_integrity: String,
    /// The namespace child is SIGKILLed after this long.
    pub time_limit: Duration,
}

impl Options {
    /// `Ok(None)` when help was asked for.
    pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut options = Options {
            quick,
            execs: if quick { 300 } else { 2000 },
            // Even, so each of the two kinds of session runs first equally often.
            rounds: if quick { 4 } else { 10 },
            apply_rounds: if quick { 2 } else { 6 },
            fapolicyd: true,
            fapolicyd_integrity: "sha256".into(),
            time_limit: Duration::from_secs(if quick { 300 } else { 1200 }),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => {}
                "--help" | "-h" => return Ok(None),
                "--no-fapolicyd" => options.fapolicyd = false,
                "--execs" => options.execs = positive("--execs", &value("--execs")?)?,
                "--rounds" => options.rounds = positive("--rounds", &value("--rounds")?)?,
                "--apply-rounds" => {
                    options.apply_rounds = positive("--apply-rounds", &value("--apply-rounds")?)?
                }
                "--fapolicyd-integrity" => {
                    let v = value("--fapolicyd-integrity")?;
                    if !["none", "size", "sha256"].contains(&v.as_str()) {
                        return Err(format!(
                            "--fapolicyd-integrity: none, size or sha256, not {v}"
                        ));
                    }
                    options.fapolicyd_integrity = v;
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(Some(options))
    }

    /// Executions per measurement and round.
    pub fn chunk(&self) -> usize {
        self.execs.div_ceil(self.rounds)
    }
}

fn positive(name: &str, text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name}: expected a positive number, got {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        Options::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_and_quick() {
        let full = parse(&[]).unwrap().unwrap();
        assert_eq!((full.execs, full.rounds, full.chunk()), (2000, 10, 200));
        let quick = parse(&["--quick"]).unwrap().unwrap();
        assert_eq!((quick.execs, quick.rounds, quick.chunk()), (300, 4, 75));
        assert!(full.fapolicyd && full.fapolicyd_integrity == "sha256");
    }

    #[test]
    fn options_and_errors() {
        let o = parse(&["--execs", "90", "--rounds", "3", "--no-fapolicyd"])
            .unwrap()
            .unwrap();
        assert_eq!((o.execs, o.rounds, o.fapolicyd), (90, 3, false));
        assert!(parse(&["--execs", "0"]).is_err());
        assert!(parse(&["--rounds"]).is_err());
        assert!(parse(&["--fapolicyd-integrity", "md5"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert_eq!(parse(&["--help"]).unwrap(), None);
    }
}
