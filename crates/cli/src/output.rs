//! Rendering: aligned tables and key/value details for people, JSON for scripts.

use appfence_proto::agent::EnforcementMode;
use appfence_proto::{
    Indicator, Machine, MachineAction, MachineEnforcement, MachineEvent, Timestamp,
};
use serde::Serialize;

/// Columns separated by two spaces, each as wide as its widest cell; no trailing spaces.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len());
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Display width; cells are ASCII in practice (ids, names, statuses), so characters
/// are a good enough measure.
fn width(s: &str) -> usize {
    s.chars().count()
}

/// `key  value` lines with the values aligned.
pub fn details(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(format!("{k:<w$}  {v}").trim_end());
        out.push('\n');
    }
    out
}

pub fn json<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("wire types always serialise");
    s.push('\n');
    s
}

fn opt(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// `2024-10-21 11:27:58`: tables need the second, not the tick.
fn short_time(t: Timestamp) -> String {
    let full = t.to_string();
    full.get(..19).map(|s| s.replace('T', " ")).unwrap_or(full)
}

pub fn actions_table(actions: &[MachineAction]) -> String {
    if actions.is_empty() {
        return "No machine actions.\n".into();
    }
    let mut t = Table::new(vec![
        "ID",
        "TYPE",
        "STATUS",
        "MACHINE",
        "CREATED (UTC)",
        "REQUESTOR",
    ]);
    for a in actions {
        t.push(vec![
            a.id.clone(),
            a.action_type.as_str().to_string(),
            a.status.as_str().to_string(),
            opt(a.computer_dns_name.as_deref().or(a.machine_id.as_deref())),
            short_time(a.creation_date_time_utc),
            opt(a.requestor.as_deref()),
        ]);
    }
    t.render()
}

pub fn action_details(a: &MachineAction) -> String {
    let mut pairs = vec![
        ("id", a.id.clone()),
        ("type", a.action_type.as_str().to_string()),
        ("status", a.status.as_str().to_string()),
        ("machine", opt(a.computer_dns_name.as_deref())),
        ("machine id", opt(a.machine_id.as_deref())),
        ("requestor", opt(a.requestor.as_deref())),
        ("comment", opt(a.requestor_comment.as_deref())),
        ("created", a.creation_date_time_utc.to_string()),
        ("last update", a.last_update_date_time_utc.to_string()),
    ];
    if let Some(t) = a.title.as_deref() {
        pairs.push(("title", t.to_string()));
    }
    if let Some(x) = a.external_id.as_deref() {
        pairs.push(("external id", x.to_string()));
    }
    if a.status == appfence_proto::ActionStatus::Cancelled || a.cancellation_requestor.is_some() {
        pairs.push(("cancelled by", opt(a.cancellation_requestor.as_deref())));
        pairs.push(("cancel comment", opt(a.cancellation_comment.as_deref())));
        pairs.push((
            "cancelled",
            a.cancellation_date_time_utc
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
        ));
    }
    if a.error_h_result != 0 {
        // HRESULTs are read in hex (0x80004005), whatever the sign of the JSON number.
        pairs.push(("error", format!("0x{:08X}", a.error_h_result as u32)));
    }
    if let Some(t) = a.troubleshoot_info.as_deref() {
        pairs.push(("troubleshoot", t.to_string()));
    }
    details(&pairs)
}

pub fn machines_table(machines: &[Machine]) -> String {
    if machines.is_empty() {
        return "No machines.\n".into();
    }
    let mut t = Table::new(vec!["ID", "NAME", "OS", "HEALTH", "LAST SEEN (UTC)", "IP"]);
    for m in machines {
        t.push(vec![
            m.id.clone(),
            opt(m.computer_dns_name.as_deref()),
            opt(m.os_platform.as_deref()),
            m.health_status.clone(),
            m.last_seen.map(short_time).unwrap_or_else(|| "-".into()),
            opt(m.last_ip_address.as_deref()),
        ]);
    }
    t.render()
}

/// The lines of `machines get`: the machine, then its enforcement state when known.
pub fn machine_details(m: &Machine, enforcement: Option<&MachineEnforcement>) -> String {
    let os = match (m.os_platform.as_deref(), m.version.as_deref()) {
        (Some(p), Some(v)) if !v.is_empty() => format!("{p} {v}"),
        (p, _) => opt(p),
    };
    let tags = if m.machine_tags.is_empty() {
        "-".into()
    } else {
        m.machine_tags.join(", ")
    };
    let ips: Vec<&str> = m
        .ip_addresses
        .iter()
        .map(|ip| ip.ip_address.as_str())
        .collect();
    let group = match (&m.rbac_group_name, m.rbac_group_id) {
        (Some(name), id) => format!("{name} ({id})"),
        (None, 0) => "-".into(),
        (None, id) => id.to_string(),
    };
    let mut pairs = vec![
        ("id", m.id.clone()),
        ("name", opt(m.computer_dns_name.as_deref())),
        ("aad device id", opt(m.aad_device_id.as_deref())),
        ("os", os),
        ("architecture", opt(m.os_architecture.as_deref())),
        ("agent version", opt(m.agent_version.as_deref())),
        ("health", m.health_status.clone()),
        ("onboarding", m.onboarding_status.clone()),
        ("first seen", m.first_seen.to_string()),
        (
            "last seen",
            m.last_seen
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("last ip", opt(m.last_ip_address.as_deref())),
        (
            "ip addresses",
            if ips.is_empty() {
                "-".into()
            } else {
                ips.join(", ")
            },
        ),
        ("device group", group),
        ("tags", tags),
        ("risk score", opt(m.risk_score.as_deref())),
        ("exposure", opt(m.exposure_level.as_deref())),
    ];
    if let Some(e) = enforcement {
        pairs.extend(enforcement_pairs(e));
    }
    details(&pairs)
}

pub fn indicators_table(indicators: &[Indicator]) -> String {
    if indicators.is_empty() {
        return "No indicators.\n".into();
    }
    let mut t = Table::new(vec![
        "ID",
        "TYPE",
        "ACTION",
        "VALUE",
        "TITLE",
        "CREATED (UTC)",
        "EXPIRES (UTC)",
        "BY",
    ]);
    for i in indicators {
        t.push(vec![
            i.id.clone(),
            i.indicator_type.clone(),
            i.action.clone(),
            i.indicator_value.clone(),
            opt(Some(&i.title)),
            short_time(i.creation_time_date_time_utc),
            i.expiration_time
                .map(short_time)
                .unwrap_or_else(|| "-".into()),
            opt(Some(&i.source)),
        ]);
    }
    t.render()
}

pub fn indicator_details(i: &Indicator) -> String {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
    details(&[
        ("id", i.id.clone()),
        ("type", i.indicator_type.clone()),
        ("action", i.action.clone()),
        ("value", i.indicator_value.clone()),
        ("title", opt(Some(&i.title))),
        ("description", opt(Some(&i.description))),
        ("application", opt(i.application.as_deref())),
        ("severity", i.severity.clone()),
        ("created", i.creation_time_date_time_utc.to_string()),
        ("created by", format!("{} ({})", i.source, i.created_by)),
        ("last update", i.last_update_time.to_string()),
        ("last updated by", opt(i.last_updated_by.as_deref())),
        ("expires", time(i.expiration_time)),
    ])
}

pub fn events_table(events: &[MachineEvent]) -> String {
    if events.is_empty() {
        return "No denied executions.\n".into();
    }
    let mut t = Table::new(vec![
        "TIME (UTC)",
        "KIND",
        "DENIED",
        "PATH",
        "SHA256",
        "PID",
        "UID",
        "PARENT",
    ]);
    for e in events {
        t.push(vec![
            short_time(e.time),
            match e.kind {
                appfence_proto::agent::DenialKind::Exec => "exec".into(),
                appfence_proto::agent::DenialKind::ElfOpen => "elfOpen".into(),
            },
            if e.monitor { "no (monitor)" } else { "yes" }.into(),
            e.path.clone(),
            e.sha256
                .as_deref()
                .map(|h| h.chars().take(16).collect())
                .unwrap_or_else(|| "-".into()),
            e.pid.to_string(),
            e.uid.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
            opt(e.parent.as_deref()),
        ]);
    }
    t.render()
}

fn mode_name(mode: EnforcementMode) -> &'static str {
    match mode {
        EnforcementMode::Enforce => "enforce",
        EnforcementMode::Monitor => "monitor",
    }
}

/// `1h 2m 3s`, `45s`: how long a device was unprotected.
fn seconds_text(total: u64) -> String {
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// The enforcement lines of `machines get`: the agent's report, then what the server wants.
fn enforcement_pairs(e: &MachineEnforcement) -> Vec<(&'static str, String)> {
    let r = &e.reported;
    let d = &e.desired;
    let restricted = match (r.restricted, r.since) {
        (true, Some(since)) => format!("yes, since {since}"),
        (true, None) => "yes".into(),
        (false, _) => "no".into(),
    };
    let coverage = if r.coverage.is_empty() {
        "-".into()
    } else {
        r.coverage.join(", ")
    };
    let mut unprotected = seconds_text(r.unprotected_seconds);
    if let Some(p) = &r.last_unprotected {
        unprotected.push_str(&format!(" (last: {} to {})", p.from, p.to));
    }
    let desired = format!(
        "{}, mode {}, allowlist version {}{}",
        if d.restricted {
            "restricted"
        } else {
            "not restricted"
        },
        mode_name(d.mode),
        d.allowlist_version,
        d.action_id
            .as_deref()
            .map(|a| format!(", by action {a}"))
            .unwrap_or_default()
    );
    let state_dir = match &r.state_fault {
        None => "ok".into(),
        Some(f) => format!("CANNOT WRITE {} since {}: {}", f.path, f.since, f.error),
    };
    vec![
        ("restricted", restricted),
        ("mode", mode_name(r.mode).into()),
        ("coverage", coverage),
        ("allowlist version", r.allowlist_version.to_string()),
        ("unprotected", unprotected),
        ("agent state", state_dir),
        (
            "reported",
            e.last_seen
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("desired", desired),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_proto::{ActionStatus, ActionType};

    fn action(id: &str, dns: Option<&str>) -> MachineAction {
        MachineAction {
            odata_context: None,
            id: id.into(),
            action_type: ActionType::RestrictCodeExecution,
            title: None,
            requestor: Some("soar".into()),
            requestor_comment: Some("alert 1234".into()),
            status: ActionStatus::InProgress,
            machine_id: Some("ab".repeat(20)),
            computer_dns_name: dns.map(str::to_string),
            creation_date_time_utc: Timestamp::parse("2024-10-21T11:27:58.1447302Z").unwrap(),
            last_update_date_time_utc: Timestamp::parse("2024-10-21T11:28:00Z").unwrap(),
            cancellation_requestor: None,
            cancellation_comment: None,
            cancellation_date_time_utc: None,
            error_h_result: 0,
            scope: None,
            external_id: None,
            request_source: Some("PublicApi".into()),
            related_file_info: None,
            commands: vec![],
            troubleshoot_info: None,
        }
    }

    #[test]
    fn aligns_columns_without_trailing_spaces() {
        let mut t = Table::new(vec!["ID", "NAME", "X"]);
        t.push(vec!["1".into(), "a-long-name".into(), "".into()]);
        t.push(vec!["1000".into(), "b".into(), "z".into()]);
        assert_eq!(
            t.render(),
            "ID    NAME         X\n\
             1     a-long-name\n\
             1000  b            z\n"
        );
    }

    #[test]
    fn renders_actions_with_fallbacks_and_short_times() {
        let text = actions_table(&[action("a-1", Some("web-01")), action("a-2", None)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("ID   TYPE                   STATUS      MACHINE"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("web-01"));
        assert!(
            lines[1].contains("2024-10-21 11:27:58  soar"),
            "{}",
            lines[1]
        );
        // Without a DNS name the machine id stands in.
        assert!(lines[2].contains(&"ab".repeat(20)));
        // The CREATED column starts at the same offset on every line.
        let col = lines[0].find("CREATED").unwrap();
        assert_eq!(&lines[1][col..col + 10], "2024-10-21");
        assert_eq!(actions_table(&[]), "No machine actions.\n");
    }

    #[test]
    fn details_show_cancellation_and_errors_only_when_relevant() {
        let plain = action_details(&action("a-1", Some("web-01")));
        assert!(plain.contains("status       InProgress\n"), "{plain}");
        assert!(!plain.contains("cancelled"));
        assert!(!plain.contains("error"));

        let mut a = action("a-1", Some("web-01"));
        a.status = ActionStatus::Failed;
        a.error_h_result = -2147467259; // E_FAIL
        a.troubleshoot_info = Some("fanotify unavailable".into());
        let failed = action_details(&a);
        assert!(failed.contains("0x80004005"), "{failed}");
        assert!(failed.contains("fanotify unavailable"));

        a.status = ActionStatus::Cancelled;
        a.cancellation_requestor = Some("admin".into());
        assert!(action_details(&a).contains("cancelled by    admin"));
    }

    #[test]
    fn json_is_the_wire_form() {
        let text = json(&action("a-1", Some("web-01")));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "a-1");
        assert_eq!(v["status"], "InProgress");
        assert_eq!(v["creationDateTimeUtc"], "2024-10-21T11:27:58.1447302Z");
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn enforcement_shows_restriction_coverage_and_unprotected_time() {
        use appfence_proto::agent::{DesiredState, EnforcementState, UnprotectedPeriod};
        let t = |s| Timestamp::parse(s).unwrap();
        let e = MachineEnforcement {
            odata_context: None,
            machine_id: "ab".repeat(20),
            computer_dns_name: "web-01".into(),
            last_seen: Some(t("2024-10-21T11:30:00Z")),
            reported: EnforcementState {
                restricted: true,
                since: Some(t("2024-10-21T11:00:00Z")),
                applied_action_id: None,
                mode: EnforcementMode::Monitor,
                coverage: vec!["/".into(), "/home".into()],
                allowlist_version: 3,
                unprotected_seconds: 3725,
                last_unprotected: Some(UnprotectedPeriod {
                    from: t("2024-10-21T10:00:00Z"),
                    to: t("2024-10-21T11:02:05Z"),
                }),
                state_fault: Some(appfence_proto::agent::StateFault {
                    path: "/var/lib/appfence/alive.json".into(),
                    error: "No space left on device (os error 28)".into(),
                    since: t("2024-10-21T11:20:00Z"),
                }),
                protected: vec![],
            },
            desired: DesiredState {
                restricted: true,
                action_id: Some("a-1".into()),
                mode: EnforcementMode::Monitor,
                allowlist_version: 4,
            },
        };
        let text = details(&enforcement_pairs(&e));
        assert!(
            text.contains("restricted         yes, since 2024-10-21T11:00:00Z\n"),
            "{text}"
        );
        assert!(text.contains("mode               monitor\n"), "{text}");
        assert!(text.contains("coverage           /, /home\n"), "{text}");
        assert!(
            text.contains("agent state        CANNOT WRITE /var/lib/appfence/alive.json since 2024-10-21T11:20:00Z: No space left on device (os error 28)\n"),
            "{text}"
        );
        assert!(text.contains("unprotected        1h 2m 5s (last: 2024-10-21T10:00:00Z to 2024-10-21T11:02:05Z)\n"), "{text}");
        assert!(
            text.contains(
                "desired            restricted, mode monitor, allowlist version 4, by action a-1\n"
            ),
            "{text}"
        );
        assert_eq!(seconds_text(59), "59s");
        assert_eq!(seconds_text(61), "1m 1s");
    }
}
