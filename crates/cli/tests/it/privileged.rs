//! What tests that need root and namespaces check first: who we are, which tools exist,
//! and whether namespaces can be made here.

use std::process::{Command, Stdio};

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// The first of `tools` that cannot be run, as a reason to skip.
pub fn missing_tool(tools: &[&str]) -> Option<String> {
    tools.iter().find_map(|tool| {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        (!found).then(|| format!("{tool} is not installed"))
    })
}

/// Why `unshare ARGS true` fails here, if it does.
pub fn cannot_unshare(args: &[&str]) -> Option<String> {
    match Command::new("unshare").args(args).arg("true").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "cannot create namespaces: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}
