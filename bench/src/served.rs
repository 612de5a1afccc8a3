//! A real `appfence serve` process on loopback, for the benchmarks that measure the
//! release binary as operators run it (replicas on PostgreSQL, the query benchmark).
//! Killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `appfence serve`.
pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// How to start one.
pub struct Serve<'a> {
    pub bin: &'a Path,
    /// Holds `data/`, `appfence.toml` and the process's output files.
    pub dir: &'a Path,
    /// Names the output files (`NAME.out`, `NAME.err`) and the process in errors.
    pub name: &'a str,
    /// `None`: the embedded SQLite store in `dir/data`.
    pub database_url: Option<&'a str>,
    /// Replicas of one service share one public URL (one token issuer).
    pub public_url: Option<&'a str>,
    /// How long it may take to say it is ready.
    pub ready_within: Duration,
}

impl Serve<'_> {
    pub fn start(&self) -> Result<Served, String> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let out = self.dir.join(format!("{}.out", self.name));
        let err = self.dir.join(format!("{}.err", self.name));
        let mut command = Command::new(self.bin);
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--public-url")
            .arg(self.public_url.unwrap_or(&url))
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--config")
            .arg(self.dir.join("appfence.toml"))
            .env("APPFENCE_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
            .stderr(std::fs::File::create(&err).map_err(|e| e.to_string())?);
        match self.database_url {
            Some(db) => command.env("APPFENCE_DATABASE_URL", db),
            None => command.env_remove("APPFENCE_DATABASE_URL"),
        };
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let mut served = Served { child, url };
        let deadline = Instant::now() + self.ready_within;
        while !std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("Press Ctrl-C to stop.")
        {
            if let Ok(Some(status)) = served.child.try_wait() {
                let e = std::fs::read_to_string(&err).unwrap_or_default();
                return Err(format!("{} exited with {status}: {e}", self.name));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not start", self.name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(served)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}
