//! Running the `appfence` binary as a child process: output goes to files (so a chatty
//! child can never block on a full pipe), every wait has a deadline, and a guard kills
//! the child whatever happens to the test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_appfence");

/// A command of the binary with a clean `APPFENCE_*` environment plus `env`.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("APPFENCE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A running child that is killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl ChildGuard {
    /// Spawns with stdout/stderr redirected to `<dir>/<name>.out|.err`.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> ChildGuard {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        cmd.stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("spawn appfence");
        ChildGuard {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Whether the child has exited already (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("try_wait")
    }

    /// Waits for the child to exit, killing it and failing after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "appfence did not exit within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout_text(),
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name, e.g. `HUP` (through kill(1): no libc dependency).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The line `serve` prints last once it is ready.
pub const READY: &str = "Press Ctrl-C to stop.";

/// Starts `appfence serve ARGS` with `env` and waits (blocking, at most `limit`) for it
/// to print that it is ready; output goes to `<logs>/<name>.out|.err`.
pub fn start_serve(
    args: &[&str],
    env: &[(&str, &str)],
    logs: &Path,
    name: &str,
    limit: Duration,
) -> ChildGuard {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut child = ChildGuard::spawn(command(&all, env), logs, name);
    wait_ready(&mut child, limit);
    child
}

/// Waits (blocking, at most `limit`) for a `serve` child to print that it is ready.
pub fn wait_ready(child: &mut ChildGuard, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !child.stdout_text().contains(READY) {
        if let Some(status) = child.exited() {
            panic!(
                "serve exited with {status}\nstdout:\n{}\nstderr:\n{}",
                child.stdout_text(),
                child.stderr_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "serve did not become ready within {limit:?}\nstderr:\n{}",
            child.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The result of one CLI invocation.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A free loopback port: bind to port 0, read it, let it go.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// [`run`] with `input` as standard input.
pub async fn run_with_stdin(
    args: &[&str],
    env: &[(&str, &str)],
    input: &str,
    limit: Duration,
) -> CliRun {
    let dir = crate::harness::private_tempdir();
    let input_file = dir.path().join("stdin");
    std::fs::write(&input_file, input).unwrap();
    let mut cmd = command(args, env);
    cmd.stdin(File::open(&input_file).unwrap());
    run_command(cmd, dir, limit).await
}

/// Runs the binary to completion (at most `limit`) off the async workers, so that an
/// in-process server on the test's runtime keeps serving meanwhile.
pub async fn run(args: &[&str], env: &[(&str, &str)], limit: Duration) -> CliRun {
    let cmd = command(args, env);
    run_command(cmd, crate::harness::private_tempdir(), limit).await
}

/// [`run`] with owned arguments (for closures that build them).
pub async fn run_owned(args: Vec<&'static str>, env: &[(&str, &str)], limit: Duration) -> CliRun {
    run(&args, env, limit).await
}

async fn run_command(cmd: Command, dir: tempfile::TempDir, limit: Duration) -> CliRun {
    tokio::task::spawn_blocking(move || {
        let mut guard = ChildGuard::spawn(cmd, dir.path(), "cli");
        let status = guard.wait(limit);
        CliRun {
            code: status.code(),
            stdout: guard.stdout_text(),
            stderr: guard.stderr_text(),
        }
    })
    .await
    .expect("CLI runner")
}
