//! Rendering: aligned tables and key/value details for people, JSON for scripts.

use appfence_proto::agent::EnforcementMode;
use appfence_proto::alert::{Alert, AlertEvidence};
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

/// The SHA-256 of the alert's first file evidence, if it has one.
fn first_file_sha256(a: &Alert) -> Option<&str> {
    a.evidence
        .iter()
        .filter(|e| e.entity_type == "File")
        .find_map(|e| e.sha256.as_deref())
}

pub fn alerts_table(alerts: &[Alert]) -> String {
    if alerts.is_empty() {
        return "No alerts.\n".into();
    }
    let mut t = Table::new(vec![
        "ID",
        "CREATED (UTC)",
        "SEVERITY",
        "STATUS",
        "MACHINE",
        "TITLE",
        "SHA256",
    ]);
    for a in alerts {
        t.push(vec![
            a.id.clone(),
            short_time(a.alert_creation_time),
            a.severity.clone(),
            a.status.clone(),
            opt(a.computer_dns_name.as_deref().or(Some(&a.machine_id))),
            opt(Some(&a.title)),
            opt(first_file_sha256(a)),
        ]);
    }
    t.render()
}

/// Every field of the alert, then its comments and evidence.
pub fn alert_details(a: &Alert) -> String {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let user = a.related_user.as_ref().map(|u| match &u.domain_name {
        Some(d) if !d.is_empty() => format!("{d}\\{}", u.user_name),
        _ => u.user_name.clone(),
    });
    let mut out = details(&[
        ("id", a.id.clone()),
        ("title", opt(Some(&a.title))),
        ("description", opt(Some(&a.description))),
        ("severity", a.severity.clone()),
        ("status", a.status.clone()),
        ("assigned to", opt(a.assigned_to.as_deref())),
        ("classification", opt(a.classification.as_deref())),
        ("determination", opt(a.determination.as_deref())),
        ("category", opt(Some(&a.category))),
        ("detection source", opt(Some(&a.detection_source))),
        ("detector", opt(Some(&a.detector_id))),
        ("threat", opt(a.threat_name.as_deref())),
        ("mitre techniques", list(&a.mitre_techniques)),
        ("machine", opt(a.computer_dns_name.as_deref())),
        ("machine id", a.machine_id.clone()),
        ("device group", opt(a.rbac_group_name.as_deref())),
        ("user", opt(user.as_deref())),
        ("created", a.alert_creation_time.to_string()),
        ("first event", time(a.first_event_time)),
        ("last event", time(a.last_event_time)),
        ("last update", a.last_update_time.to_string()),
        ("resolved", time(a.resolved_time)),
    ]);
    if a.comments.is_empty() {
        out.push_str("\nNo comments.\n");
    } else {
        out.push_str(&format!("\nComments ({}):\n", a.comments.len()));
        for c in &a.comments {
            out.push_str(&format!(
                "  {} {}: {}\n",
                c.created_time,
                c.created_by,
                c.comment.replace('\n', "\n    ")
            ));
        }
    }
    if a.evidence.is_empty() {
        out.push_str("\nNo evidence.\n");
    } else {
        out.push_str(&format!("\nEvidence ({}):\n", a.evidence.len()));
        for (n, e) in a.evidence.iter().enumerate() {
            out.push_str(&format!("  {}. {}\n", n + 1, e.entity_type));
            for line in details(&evidence_pairs(e)).lines() {
                out.push_str("     ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The fields of one piece of evidence that have a value.
fn evidence_pairs(e: &AlertEvidence) -> Vec<(&'static str, String)> {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string());
    let number = |n: Option<i64>| n.map(|n| n.to_string());
    let join = |dir: &Option<String>, name: &Option<String>| match (dir, name) {
        (Some(d), Some(n)) => Some(format!("{}/{n}", d.trim_end_matches('/'))),
        (None, Some(n)) => Some(n.clone()),
        (Some(d), None) => Some(d.clone()),
        (None, None) => None,
    };
    let candidates: Vec<(&'static str, Option<String>)> = vec![
        ("file", join(&e.file_path, &e.file_name)),
        ("sha256", e.sha256.clone()),
        ("sha1", e.sha1.clone()),
        ("detection", e.detection_status.clone()),
        ("process id", number(e.process_id)),
        ("command line", e.process_command_line.clone()),
        ("process created", time(e.process_creation_time)),
        ("parent id", number(e.parent_process_id)),
        (
            "parent",
            join(&e.parent_process_file_path, &e.parent_process_file_name),
        ),
        ("parent created", time(e.parent_process_creation_time)),
        ("account", e.account_name.clone()),
        ("domain", e.domain_name.clone()),
        ("user sid", e.user_sid.clone()),
        ("aad user id", e.aad_user_id.clone()),
        ("upn", e.user_principal_name.clone()),
        ("ip address", e.ip_address.clone()),
        ("url", e.url.clone()),
        ("registry key", e.registry_key.clone()),
        ("registry hive", e.registry_hive.clone()),
        ("registry type", e.registry_value_type.clone()),
        ("registry value", e.registry_value.clone()),
        ("seen", time(e.evidence_creation_time)),
    ];
    candidates
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect()
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

    fn alert() -> Alert {
        let t = |s| Timestamp::parse(s).unwrap();
        Alert {
            odata_context: None,
            id: "da637".into(),
            incident_id: None,
            investigation_id: None,
            assigned_to: Some("secops@contoso.com".into()),
            severity: "High".into(),
            status: "InProgress".into(),
            classification: None,
            determination: None,
            investigation_state: None,
            detection_source: "CustomerTI".into(),
            detector_id: "appfence-file-blocked".into(),
            category: "Execution".into(),
            threat_family_name: None,
            title: "A blocked file ran".into(),
            description: "miner".into(),
            alert_creation_time: t("2024-10-21T11:27:58.1447302Z"),
            first_event_time: Some(t("2024-10-21T11:27:50Z")),
            last_event_time: Some(t("2024-10-21T11:27:55Z")),
            last_update_time: t("2024-10-21T11:30:00Z"),
            resolved_time: None,
            machine_id: "ab".repeat(20),
            computer_dns_name: Some("web-01".into()),
            rbac_group_name: None,
            aad_tenant_id: "t".into(),
            threat_name: None,
            mitre_techniques: vec!["T1204".into()],
            related_user: Some(appfence_proto::RelatedUser {
                user_name: "ana".into(),
                domain_name: None,
            }),
            comments: vec![appfence_proto::AlertComment {
                comment: "looking\ninto it".into(),
                created_by: "ana@contoso.com".into(),
                created_time: t("2024-10-21T11:29:00Z"),
            }],
            evidence: vec![
                AlertEvidence {
                    entity_type: "Process".into(),
                    process_id: Some(4242),
                    process_command_line: Some("bash -c ./miner".into()),
                    ..Default::default()
                },
                AlertEvidence {
                    entity_type: "File".into(),
                    sha256: Some("cd".repeat(32)),
                    file_name: Some("miner".into()),
                    file_path: Some("/tmp/".into()),
                    detection_status: Some("Blocked".into()),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn alerts_show_in_a_table_with_the_first_file_hash() {
        let mut other = alert();
        other.id = "da638".into();
        other.computer_dns_name = None;
        other.evidence.clear();
        let text = alerts_table(&[alert(), other]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ID     CREATED (UTC)        SEVERITY  STATUS"),
            "{text}"
        );
        assert!(
            lines[1].contains("2024-10-21 11:27:58  High      InProgress  web-01"),
            "{text}"
        );
        assert!(lines[1].ends_with(&"cd".repeat(32)), "{text}");
        assert!(
            lines[2].contains(&"ab".repeat(20)),
            "the machine id stands in: {text}"
        );
        assert!(lines[2].ends_with(" -"), "{text}");
        assert_eq!(alerts_table(&[]), "No alerts.\n");
    }

    #[test]
    fn alert_details_show_fields_comments_and_evidence() {
        let text = alert_details(&alert());
        for want in [
            "status            InProgress\n",
            "assigned to       secops@contoso.com\n",
            "classification    -\n",
            "mitre techniques  T1204\n",
            "user              ana\n",
            "created           2024-10-21T11:27:58.1447302Z\n",
            "Comments (1):\n  2024-10-21T11:29:00Z ana@contoso.com: looking\n    into it\n",
            "Evidence (2):\n  1. Process\n",
            "     process id    4242\n     command line  bash -c ./miner\n",
            "  2. File\n     file       /tmp/miner\n",
            "     detection  Blocked\n",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        assert!(
            text.contains(&format!("sha256     {}\n", "cd".repeat(32))),
            "{text}"
        );
        let mut bare = alert();
        bare.comments.clear();
        bare.evidence.clear();
        let text = alert_details(&bare);
        assert!(text.contains("\nNo comments.\n") && text.contains("\nNo evidence.\n"));
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
