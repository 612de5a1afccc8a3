//! Parsers of setting values, shared by clap (flags), the environment and the config
//! file, so a value means the same wherever it is written.

use std::net::SocketAddr;
use std::time::Duration;

use appfence_proto::agent::EnforcementMode;

use crate::duration::parse_duration;

/// Simulated devices are cheap tasks, but each keeps a long-poll open.
pub const MAX_DEMO_DEVICES: u32 = 100_000;

pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("{s:?} is not an address with a port, e.g. 127.0.0.1:8080 or [::]:8080")
    })
}

/// An absolute http(s) URL; the trailing slash is dropped.
pub fn parse_public_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("{s:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "{s:?} is not a base URL like https://appfence.example.com"
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

pub fn parse_demo_devices(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    check_demo_devices(n)
}

pub fn check_demo_devices(n: u32) -> Result<u32, String> {
    // 0: the demo tenant and its credentials without simulated devices of this process
    // (a second replica of a demo whose devices run on the first).
    if n <= MAX_DEMO_DEVICES {
        Ok(n)
    } else {
        Err(format!(
            "the number of demo devices must be between 0 and {MAX_DEMO_DEVICES}"
        ))
    }
}

/// A tracing filter: a level or directives such as `info,appfence_server=debug`.
pub fn parse_log_level(s: &str) -> Result<String, String> {
    let s = s.trim();
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| {
            format!("{s:?} is not a log filter (e.g. info, debug, appfence_server=debug): {e}")
        })
}

/// `enforce` (deny programs outside the trusted set) or `monitor` (only report them).
pub fn parse_agent_mode(s: &str) -> Result<EnforcementMode, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "enforce" => Ok(EnforcementMode::Enforce),
        "monitor" => Ok(EnforcementMode::Monitor),
        _ => Err(format!("{s:?} is not an agent mode (enforce or monitor)")),
    }
}

pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "{s:?} is not a boolean (true/false, 1/0, yes/no, on/off)"
        )),
    }
}

/// A period such as `90d`, or `off` (never).
pub fn parse_optional_period(s: &str) -> Result<Option<Duration>, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "off" | "never" => Ok(None),
        _ => match parse_duration(s)? {
            d if d.is_zero() => Err(format!("{s:?} must be longer than 0 (or off)")),
            d => Ok(Some(d)),
        },
    }
}

/// How often replicas re-read the signing keys: at least 100 ms, at most an hour.
pub fn parse_refresh_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("{s:?} must be between 100ms and 1h"));
    }
    Ok(d)
}

/// An IP address (a trusted reverse proxy).
pub fn parse_ip(s: &str) -> Result<std::net::IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address, e.g. 10.0.0.5 or fd00::5"))
}

/// Comma-separated IP addresses.
pub fn parse_ip_list(s: &str) -> Result<Vec<std::net::IpAddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_ip)
        .collect()
}

/// A PostgreSQL URL, `postgres://user:password@host:port/database`; kept as a secret
/// (it may hold a password) and never printed whole.
/// A database URL as given on the command line, checked later by [`parse_database_url`]:
/// clap would echo a value it refuses, password and all.
pub fn database_url_arg(s: &str) -> Result<appfence_proto::Secret, std::convert::Infallible> {
    Ok(appfence_proto::Secret::new(s))
}

pub fn parse_database_url(s: &str) -> Result<appfence_proto::Secret, String> {
    let s = s.trim();
    if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
        return Err(format!(
            "{} is not a PostgreSQL URL (postgres://user:password@host:5432/database)",
            appfence_store::postgres::redact(s)
        ));
    }
    Ok(appfence_proto::Secret::new(s))
}

/// `--disk-free-warning`: a size, a percentage or `off`.
pub fn parse_free_space_warning(
    s: &str,
) -> Result<appfence_server::disk_space::FreeSpaceWarning, String> {
    s.parse()
}

/// `--log-format`: `text` or `json`.
pub fn parse_log_format(s: &str) -> Result<crate::args::LogFormat, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(crate::args::LogFormat::Text),
        "json" => Ok(crate::args::LogFormat::Json),
        _ => Err(format!("invalid log format {s:?}; write text or json")),
    }
}

/// `alerts list --since`: an RFC 3339 time, or how long ago.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    At(appfence_proto::Timestamp),
    Ago(Duration),
}

impl Since {
    /// The time this stands for, `now` being now.
    pub fn at(self, now: appfence_proto::Timestamp) -> appfence_proto::Timestamp {
        match self {
            Since::At(t) => t,
            Since::Ago(d) => now.minus(d),
        }
    }
}

/// `2026-12-07T09:30:00Z` (any offset), or a duration such as `1h`, `30m`, `7d`.
pub fn parse_since(s: &str) -> Result<Since, String> {
    let s = s.trim();
    if let Some(t) = appfence_proto::Timestamp::parse(s) {
        return Ok(Since::At(t));
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) && !s.contains(['-', ':']) {
        return parse_duration(s).map(Since::Ago);
    }
    Err(format!(
        "{s:?} is neither an RFC 3339 time (e.g. 2026-12-07T09:30:00Z) nor a duration (e.g. 1h, 30m, 7d)"
    ))
}
