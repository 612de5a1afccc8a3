//! Which events become alerts, and how they are grouped. Every detector has a fixed id,
//! title, category, severity and detection source (documented in docs/alerts.md).
//!
//! Grouping: the same file on the same device stays one alert while events keep coming
//! within the group window (its `lastEventTime` moves); a protection gap or a silence is
//! one alert for good, whatever its status.

use std::collections::HashMap;
use std::time::Duration;

use appfence_proto::agent::{DenialEvent, DenialKind, ProtectedFile, ProtectedRole, RuleOutcome};
use appfence_proto::alert::{AlertEvidence, RelatedUser};
use appfence_proto::Timestamp;

use crate::records::MachineRecord;

/// Where an alert came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Detector {
    /// A restricted device denied a program outside its trusted set.
    RestrictedExecution,
    /// A file blocked by an indicator was denied (the indicator asked for alerts).
    BlockedFile,
    /// A file an audit indicator watches ran.
    AuditedFile,
    /// Monitor mode: a program would have been denied (only when configured).
    MonitoredExecution,
    /// The agent reported time a restricted device was unprotected.
    ProtectionGap,
    /// A restricted device stopped checking in.
    AgentSilent,
}

impl Detector {
    /// `detectorId`: stable per detector.
    pub fn id(self) -> &'static str {
        match self {
            Detector::RestrictedExecution => "6f1d7d3e-5a0b-4c52-9b0e-0a1e7c9d2f01",
            Detector::BlockedFile => "6f1d7d3e-5a0b-4c52-9b0e-0a1e7c9d2f02",
            Detector::AuditedFile => "6f1d7d3e-5a0b-4c52-9b0e-0a1e7c9d2f03",
            Detector::MonitoredExecution => "6f1d7d3e-5a0b-4c52-9b0e-0a1e7c9d2f04",
            Detector::ProtectionGap => "6f1d7d3e-5a0b-4c52-9b0e-0a1e7c9d2f05",
            Detector::AgentSilent => "6f1d7d3e-5a0b-4c52-9b0e-0a1e7c9d2f06",
        }
    }

    pub fn category(self) -> &'static str {
        match self {
            Detector::RestrictedExecution | Detector::MonitoredExecution => "Execution",
            Detector::BlockedFile => "Malware",
            Detector::AuditedFile => "SuspiciousActivity",
            Detector::ProtectionGap | Detector::AgentSilent => "DefenseEvasion",
        }
    }

    /// The severity when no indicator gives one.
    pub fn severity(self) -> &'static str {
        match self {
            Detector::RestrictedExecution | Detector::AgentSilent => "Medium",
            Detector::BlockedFile | Detector::ProtectionGap => "High",
            Detector::AuditedFile => "Low",
            Detector::MonitoredExecution => "Informational",
        }
    }

    /// MDE's `detectionSource`: `CustomerTI` for the tenant's own indicators (as MDE
    /// labels custom indicator alerts), `ThirdPartySensors` for what appfence's agent
    /// and server detect themselves.
    pub fn detection_source(self) -> &'static str {
        match self {
            Detector::BlockedFile | Detector::AuditedFile => "CustomerTI",
            _ => "ThirdPartySensors",
        }
    }

    pub fn default_title(self) -> &'static str {
        match self {
            Detector::RestrictedExecution => "Untrusted program stopped on a restricted device",
            Detector::BlockedFile => "Blocked file stopped by an indicator",
            Detector::AuditedFile => "Audited file ran",
            Detector::MonitoredExecution => {
                "Untrusted program would have been stopped (monitor mode)"
            }
            Detector::ProtectionGap => "Restricted device was unprotected",
            Detector::AgentSilent => "Restricted device stopped checking in",
        }
    }

    /// MITRE ATT&CK techniques: a user running a malicious file (T1204.002); tampering
    /// with the defence (T1562.001).
    pub fn mitre_techniques(self) -> &'static [&'static str] {
        match self {
            Detector::ProtectionGap | Detector::AgentSilent => &["T1562.001"],
            _ => &["T1204.002"],
        }
    }

    /// The detector of a stored `detectorId`.
    pub fn from_id(id: &str) -> Option<Self> {
        [
            Detector::RestrictedExecution,
            Detector::BlockedFile,
            Detector::AuditedFile,
            Detector::MonitoredExecution,
            Detector::ProtectionGap,
            Detector::AgentSilent,
        ]
        .into_iter()
        .find(|d| d.id() == id)
    }
}

/// How alerts are raised (`serve --alert-group-window`, `--alert-on-monitor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    /// Events of the same file on the same device join an open alert whose last event
    /// is at most this old.
    pub group_window: Duration,
    /// Monitor mode's would-be denials raise (informational) alerts too.
    pub monitor_alerts: bool,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            group_window: Duration::from_secs(24 * 3600),
            monitor_alerts: false,
        }
    }
}

/// What the tenant's indicator says about its alerts (title, description, severity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndicatorInfo {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: String,
}

/// An alert to raise, or to fold into the alert it groups with.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertCandidate {
    pub machine_id: String,
    pub detector: Detector,
    /// With the machine and detector, what makes two events the same alert.
    pub group_key: String,
    /// `Some(t)`: joins an alert that is not resolved and whose last event is at or
    /// after `t`. `None`: joins any alert with the same key, resolved or not (raised
    /// once for good).
    pub join_since: Option<Timestamp>,
    pub first_event: Timestamp,
    pub last_event: Timestamp,
    pub count: i64,
    pub title: String,
    pub description: String,
    pub severity: String,
    pub threat_name: Option<String>,
    pub related_user: Option<RelatedUser>,
    pub evidence: Vec<AlertEvidence>,
}

impl AlertCandidate {
    /// What the stored alert it groups with (its events `first`..`last`) takes from this
    /// candidate: the events to add to its count, or `None` when nothing changes (an
    /// alert raised once for good, seen again within what it already says).
    pub fn fold_into(&self, first: Timestamp, last: Timestamp) -> Option<i64> {
        match self.join_since {
            Some(_) => Some(self.count),
            None if self.first_event < first || self.last_event > last => Some(0),
            None => None,
        }
    }
}

/// The `alertCreationTime` of a tenant's next new alert: `now`, or one tick after the
/// newest it has (`newest`), so creation times are unique and grow in commit order.
pub fn next_creation_time(now: Timestamp, newest: Option<Timestamp>) -> Timestamp {
    match newest {
        Some(n) if n.ticks() >= now.ticks() => Timestamp::from_ticks(n.ticks() + 1),
        _ => now,
    }
}

/// The alerts a batch of a device's events raises, already grouped within the batch
/// (the same file in one batch is one candidate), in the order first seen.
pub fn denial_alerts(
    machine: &MachineRecord,
    events: &[DenialEvent],
    indicators: &HashMap<String, IndicatorInfo>,
    settings: &AlertSettings,
    received: Timestamp,
) -> Vec<AlertCandidate> {
    let mut out: Vec<AlertCandidate> = Vec::new();
    let mut index: HashMap<(Detector, String), usize> = HashMap::new();
    for e in events {
        let Some(detector) = detector_of(e, settings) else {
            continue;
        };
        let key = e
            .sha256
            .clone()
            .unwrap_or_else(|| format!("path:{}", e.path));
        match index.get(&(detector, key.clone())) {
            Some(&i) => {
                let c = &mut out[i];
                c.first_event = c.first_event.min(e.time);
                c.last_event = c.last_event.max(e.time);
                c.count += 1;
                c.join_since = Some(c.first_event.minus(settings.group_window));
            }
            None => {
                index.insert((detector, key.clone()), out.len());
                let indicator = e.indicator_id.as_ref().and_then(|id| indicators.get(id));
                out.push(candidate(
                    machine, detector, key, e, indicator, settings, received,
                ));
            }
        }
    }
    out
}

fn detector_of(e: &DenialEvent, settings: &AlertSettings) -> Option<Detector> {
    match e.rule {
        Some(RuleOutcome::Blocked) => e.alert.then_some(Detector::BlockedFile),
        Some(RuleOutcome::Audited) => Some(Detector::AuditedFile),
        None if e.monitor => settings
            .monitor_alerts
            .then_some(Detector::MonitoredExecution),
        None => Some(Detector::RestrictedExecution),
    }
}

fn split_path(path: &str) -> (Option<String>, Option<String>) {
    match path.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() => (
            Some(name.to_string()),
            Some(if dir.is_empty() {
                "/".into()
            } else {
                dir.to_string()
            }),
        ),
        _ => (Some(path.to_string()), None),
    }
}

fn user_name(e: &DenialEvent) -> Option<String> {
    e.user
        .clone()
        .or_else(|| e.uid.map(|uid| format!("uid {uid}")))
}

fn candidate(
    machine: &MachineRecord,
    detector: Detector,
    group_key: String,
    e: &DenialEvent,
    indicator: Option<&IndicatorInfo>,
    settings: &AlertSettings,
    received: Timestamp,
) -> AlertCandidate {
    let denied = !e.monitor;
    let status = if denied { "Blocked" } else { "Detected" };
    let user = user_name(e);
    let (file_name, file_path) = split_path(&e.path);
    let mut evidence = vec![AlertEvidence {
        entity_type: "File".into(),
        evidence_creation_time: Some(received),
        sha256: e.sha256.clone(),
        file_name,
        file_path,
        detection_status: Some(status.into()),
        ..Default::default()
    }];
    let (parent_name, parent_path) = match &e.parent {
        Some(p) => split_path(p),
        None => (None, None),
    };
    // Pid 0: fanotify could not name the process (it is outside the agent's pid
    // namespace); there is no process to show.
    if e.pid != 0 {
        evidence.push(AlertEvidence {
            entity_type: "Process".into(),
            evidence_creation_time: Some(received),
            file_name: parent_name,
            file_path: parent_path,
            process_id: Some(i64::from(e.pid)),
            process_command_line: e.command_line.clone(),
            account_name: user.clone(),
            detection_status: Some(status.into()),
            ..Default::default()
        });
    }
    if let Some(name) = &user {
        evidence.push(AlertEvidence {
            entity_type: "User".into(),
            evidence_creation_time: Some(received),
            account_name: Some(name.clone()),
            domain_name: Some(machine.computer_dns_name.clone()),
            ..Default::default()
        });
    }
    let how = match e.kind {
        DenialKind::Exec => "run",
        DenialKind::ElfOpen => "load (as a program through the dynamic loader, or as a library)",
    };
    let hash = e
        .sha256
        .as_deref()
        .map_or_else(String::new, |h| format!(" (SHA-256 {h})"));
    let by = match (e.pid, &e.parent, &e.command_line) {
        (0, _, _) => String::new(),
        (pid, _, Some(cmd)) => {
            format!(" Process {pid} ({}) asked.", crate::ids::truncate(cmd, 200))
        }
        (pid, Some(p), None) => format!(" Process {pid} ({p}) asked."),
        (pid, None, None) => format!(" Process {pid} asked."),
    };
    let host = &machine.computer_dns_name;
    let description = match detector {
        Detector::RestrictedExecution => format!(
            "{host} is restricted to trusted programs and refused to {how} {}{hash}, which is neither package-verified nor allowed by an indicator.{by}",
            e.path
        ),
        Detector::MonitoredExecution => format!(
            "{host} is restricted in monitor mode: it would have refused to {how} {}{hash}, and let it run.{by}",
            e.path
        ),
        Detector::BlockedFile => format!(
            "{host} refused to {how} {}{hash}: an indicator blocks this file.{by}",
            e.path
        ),
        Detector::AuditedFile | Detector::ProtectionGap | Detector::AgentSilent => format!(
            "{host} let {} run{hash}: an indicator audits this file.{by}",
            e.path
        ),
    };
    let (title, description, severity) = match indicator {
        Some(i) => (
            i.title.clone(),
            if i.description.is_empty() {
                description
            } else {
                format!("{} {description}", i.description)
            },
            i.severity.clone(),
        ),
        None => (
            detector.default_title().to_string(),
            description,
            detector.severity().to_string(),
        ),
    };
    AlertCandidate {
        machine_id: machine.id.clone(),
        detector,
        group_key,
        join_since: Some(e.time.minus(settings.group_window)),
        first_event: e.time,
        last_event: e.time,
        count: 1,
        title,
        description,
        severity,
        threat_name: indicator.map(|i| i.title.clone()),
        related_user: user.map(|user_name| RelatedUser {
            user_name,
            domain_name: Some(machine.computer_dns_name.clone()),
        }),
        evidence,
    }
}

/// The agent file's evidence, from what the agent reported as protected.
fn agent_evidence(protected: &[ProtectedFile], at: Timestamp) -> Vec<AlertEvidence> {
    protected
        .iter()
        .filter(|p| p.role == ProtectedRole::Agent)
        .map(|p| {
            let (file_name, file_path) = split_path(&p.path);
            AlertEvidence {
                entity_type: "File".into(),
                evidence_creation_time: Some(at),
                sha256: Some(p.sha256.clone()),
                file_name,
                file_path,
                detection_status: Some("Detected".into()),
                ..Default::default()
            }
        })
        .collect()
}

/// The alert for a period a restricted device reported being unprotected (the agent
/// was stopped or killed, or the host restarted while restricted): one per period.
pub fn protection_gap_alert(
    machine: &MachineRecord,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
) -> AlertCandidate {
    let seconds = (to.unix_seconds() - from.unix_seconds()).max(0);
    AlertCandidate {
        machine_id: machine.id.clone(),
        detector: Detector::ProtectionGap,
        group_key: format!("gap:{}", from.ticks()),
        join_since: None,
        first_event: from,
        last_event: to,
        count: 1,
        title: Detector::ProtectionGap.default_title().into(),
        description: format!(
            "{} should have been restricted but its agent was not enforcing for {seconds} s (from {from} to {to}): the agent was stopped or killed, or the host restarted. Programs that ran meanwhile were not checked.",
            machine.computer_dns_name
        ),
        severity: Detector::ProtectionGap.severity().into(),
        threat_name: None,
        related_user: None,
        evidence: agent_evidence(&machine.enforcement.protected, now),
    }
}

/// The alert for a restricted device whose agent has not checked in since `last_seen`:
/// one per silence (a device that comes back and goes silent again raises another).
pub fn silence_alert(
    machine: &MachineRecord,
    last_seen: Timestamp,
    now: Timestamp,
) -> AlertCandidate {
    let minutes = (now.unix_seconds() - last_seen.unix_seconds()).max(0) / 60;
    AlertCandidate {
        machine_id: machine.id.clone(),
        detector: Detector::AgentSilent,
        group_key: format!("silent:{}", last_seen.ticks()),
        join_since: None,
        first_event: last_seen,
        last_event: last_seen,
        count: 1,
        title: Detector::AgentSilent.default_title().into(),
        description: format!(
            "{} is restricted and its agent last checked in at {last_seen} ({minutes} minutes before this alert): the agent may have been stopped, the host switched off or cut off from the network. Whether it still enforces is unknown.",
            machine.computer_dns_name
        ),
        severity: Detector::AgentSilent.severity().into(),
        threat_name: None,
        related_user: None,
        evidence: agent_evidence(&machine.enforcement.protected, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests_support::machine;

    fn event(seconds: i64, path: &str, sha: char) -> DenialEvent {
        DenialEvent {
            time: Timestamp::from_unix_seconds(seconds),
            path: path.into(),
            sha256: Some(sha.to_string().repeat(64)),
            pid: 77,
            uid: Some(1000),
            parent: Some("/usr/bin/bash".into()),
            kind: DenialKind::Exec,
            monitor: false,
            rule: None,
            indicator_id: None,
            alert: false,
            command_line: Some("bash -c ./x --now".into()),
            user: Some("alice".into()),
        }
    }

    #[test]
    fn the_same_file_in_a_batch_is_one_candidate_with_its_evidence() {
        let m = machine("web-01.contoso.local");
        let events = [
            event(10, "/tmp/x", 'a'),
            event(12, "/tmp/y", 'b'),
            event(15, "/tmp/x", 'a'),
        ];
        let got = denial_alerts(
            &m,
            &events,
            &HashMap::new(),
            &AlertSettings::default(),
            Timestamp::from_unix_seconds(20),
        );
        assert_eq!(got.len(), 2);
        let x = &got[0];
        assert_eq!(x.detector, Detector::RestrictedExecution);
        assert_eq!(
            (
                x.count,
                x.first_event.unix_seconds(),
                x.last_event.unix_seconds()
            ),
            (2, 10, 15)
        );
        assert_eq!(
            x.join_since,
            Some(Timestamp::from_unix_seconds(10 - 24 * 3600))
        );
        let file = &x.evidence[0];
        assert_eq!(
            (
                file.entity_type.as_str(),
                file.file_name.as_deref(),
                file.file_path.as_deref()
            ),
            ("File", Some("x"), Some("/tmp"))
        );
        assert_eq!(file.sha256.as_deref(), Some("a".repeat(64).as_str()));
        assert_eq!(file.detection_status.as_deref(), Some("Blocked"));
        let process = &x.evidence[1];
        assert_eq!(process.process_id, Some(77));
        assert_eq!(
            process.process_command_line.as_deref(),
            Some("bash -c ./x --now")
        );
        assert_eq!(process.file_name.as_deref(), Some("bash"));
        assert_eq!(x.evidence[2].account_name.as_deref(), Some("alice"));
        assert_eq!(x.related_user.as_ref().unwrap().user_name, "alice");
        assert!(x.description.contains("/tmp/x"), "{}", x.description);
        assert!(x
            .description
            .contains("Process 77 (bash -c ./x --now) asked."));

        // Pid 0 (outside the agent's pid namespace): no process to show.
        let mut unnamed = event(30, "/tmp/z", 'c');
        unnamed.pid = 0;
        let got = denial_alerts(
            &m,
            &[unnamed],
            &HashMap::new(),
            &AlertSettings::default(),
            Timestamp::from_unix_seconds(31),
        );
        let kinds: Vec<_> = got[0]
            .evidence
            .iter()
            .map(|e| e.entity_type.as_str())
            .collect();
        assert_eq!(kinds, ["File", "User"]);
        assert!(
            !got[0].description.contains("Process"),
            "{}",
            got[0].description
        );
    }

    #[test]
    fn rules_and_monitor_mode_pick_the_detector() {
        let m = machine("h");
        let mut blocked_silent = event(1, "/a", 'a');
        blocked_silent.rule = Some(RuleOutcome::Blocked);
        let mut blocked = event(1, "/b", 'b');
        blocked.rule = Some(RuleOutcome::Blocked);
        blocked.alert = true;
        blocked.indicator_id = Some("7".into());
        let mut audited = event(1, "/c", 'c');
        audited.rule = Some(RuleOutcome::Audited);
        audited.monitor = true;
        let mut monitored = event(1, "/d", 'd');
        monitored.monitor = true;
        let events = [blocked_silent, blocked, audited, monitored];
        let info = HashMap::from([(
            "7".to_string(),
            IndicatorInfo {
                id: "7".into(),
                title: "Known ransomware".into(),
                description: "From the IR team.".into(),
                severity: "High".into(),
            },
        )]);
        let now = Timestamp::from_unix_seconds(2);
        let got = denial_alerts(&m, &events, &info, &AlertSettings::default(), now);
        let detectors: Vec<_> = got.iter().map(|c| c.detector).collect();
        assert_eq!(detectors, [Detector::BlockedFile, Detector::AuditedFile]);
        assert_eq!(got[0].title, "Known ransomware");
        assert_eq!(got[0].threat_name.as_deref(), Some("Known ransomware"));
        assert!(got[0].description.starts_with("From the IR team."));
        assert_eq!(
            got[1].evidence[0].detection_status.as_deref(),
            Some("Detected")
        );
        let monitor = AlertSettings {
            monitor_alerts: true,
            ..AlertSettings::default()
        };
        let got = denial_alerts(&m, &events, &info, &monitor, now);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].detector, Detector::MonitoredExecution);
        assert_eq!(got[2].severity, "Informational");
    }

    #[test]
    fn folding_and_creation_times() {
        let m = machine("h");
        let t = Timestamp::from_unix_seconds;
        let windowed = &denial_alerts(
            &m,
            &[event(10, "/x", 'a')],
            &HashMap::new(),
            &AlertSettings::default(),
            t(11),
        )[0];
        assert_eq!(
            windowed.fold_into(t(0), t(20)),
            Some(1),
            "a windowed alert always counts"
        );
        let gap = protection_gap_alert(&m, t(100), t(160), t(200));
        assert_eq!(
            gap.fold_into(t(100), t(160)),
            None,
            "seen again: nothing changes"
        );
        assert_eq!(
            gap.fold_into(t(100), t(150)),
            Some(0),
            "the gap grew: times move, no count"
        );
        assert_eq!(next_creation_time(t(5), None), t(5));
        assert_eq!(next_creation_time(t(5), Some(t(4))), t(5));
        assert_eq!(
            next_creation_time(t(5), Some(t(5))).ticks(),
            t(5).ticks() + 1
        );
        assert_eq!(
            next_creation_time(t(5), Some(t(9))).ticks(),
            t(9).ticks() + 1
        );
    }

    #[test]
    fn protection_alerts_are_raised_once_per_gap_or_silence() {
        let m = machine("h");
        let gap = protection_gap_alert(
            &m,
            Timestamp::from_unix_seconds(100),
            Timestamp::from_unix_seconds(160),
            Timestamp::from_unix_seconds(200),
        );
        assert_eq!(gap.join_since, None);
        assert_eq!(
            gap.group_key,
            format!("gap:{}", Timestamp::from_unix_seconds(100).ticks())
        );
        assert!(gap.description.contains("for 60 s"), "{}", gap.description);
        let silent = silence_alert(
            &m,
            Timestamp::from_unix_seconds(0),
            Timestamp::from_unix_seconds(600),
        );
        assert!(
            silent.description.contains("10 minutes"),
            "{}",
            silent.description
        );
        assert_eq!(
            Detector::from_id(silent.detector.id()),
            Some(Detector::AgentSilent)
        );
    }
}
