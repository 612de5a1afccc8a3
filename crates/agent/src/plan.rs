//! The command loop's decisions, as pure functions of what the server said and what the
//! device enforces, so that they can be tested without a server.

use appfence_proto::agent::{
    ActionUpdateResponse, AllowlistResponse, Command, DesiredState, EnforcementState, FileRule,
    ProtectedFile, UnprotectedPeriod,
};
use appfence_proto::{ActionType, Timestamp};

use crate::enforcer::{hresult, is_sha256_hex};

/// The state an action type asks for, if it is one this agent enforces.
pub fn requested_state(action_type: ActionType) -> Option<bool> {
    match action_type {
        ActionType::RestrictCodeExecution => Some(true),
        ActionType::UnrestrictCodeExecution => Some(false),
        _ => None,
    }
}

/// What to do with a command once its acknowledgement came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The action is no longer open (cancelled, timed out): leave it alone.
    Skip,
    /// Put the device in this state, then report.
    Apply { restricted: bool },
    /// Lift the enforcement, report, forget the credential and the state, and stop.
    Offboard,
    /// The agent cannot perform this action type: report it failed.
    Reject {
        error_h_result: i64,
        troubleshoot_info: String,
    },
}

/// Decides a command's fate from the answer to its acknowledgement. Only an
/// acknowledgement with `applied: true` lets the device act: the server no longer holds
/// the action open otherwise.
pub fn decide(command: &Command, ack: &ActionUpdateResponse) -> Step {
    if !ack.applied {
        return Step::Skip;
    }
    if command.action_type == ActionType::Offboard {
        return Step::Offboard;
    }
    match requested_state(command.action_type) {
        Some(restricted) => Step::Apply { restricted },
        None => Step::Reject {
            error_h_result: hresult::E_NOTIMPL,
            troubleshoot_info: format!(
                "The appfence agent does not support {}",
                command.action_type.as_str()
            ),
        },
    }
}

/// How the device stands against the server's desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Convergence {
    /// Enforcement and records agree with the server.
    InSync,
    /// The enforcement is right but the persisted record names another action (or another
    /// state): rewrite the record only.
    Record,
    /// The enforcer must change state.
    Apply { restricted: bool },
}

/// Compares what is enforced (`actual_restricted`, from the enforcer) and recorded
/// (`persisted`) with what the server wants.
pub fn convergence(
    actual_restricted: bool,
    persisted: &EnforcementState,
    desired: &DesiredState,
) -> Convergence {
    if actual_restricted != desired.restricted {
        Convergence::Apply {
            restricted: desired.restricted,
        }
    } else if persisted.restricted != desired.restricted
        || persisted.applied_action_id != desired.action_id
    {
        Convergence::Record
    } else {
        Convergence::InSync
    }
}

/// The record after moving to `restricted` because of `action_id`: `since` changes only
/// when the state does.
pub fn next_state(
    persisted: &EnforcementState,
    restricted: bool,
    action_id: Option<String>,
    now: Timestamp,
) -> EnforcementState {
    let since = if persisted.restricted == restricted && persisted.since.is_some() {
        persisted.since
    } else {
        Some(now)
    };
    EnforcementState {
        restricted,
        since,
        applied_action_id: action_id,
        ..persisted.clone()
    }
}

/// What the heartbeat reports: the record, unless the enforcer disagrees with it (a failed
/// re-apply at start), in which case the truth without the record's details.
pub fn reported_state(actual_restricted: bool, persisted: &EnforcementState) -> EnforcementState {
    if persisted.restricted == actual_restricted {
        persisted.clone()
    } else {
        EnforcementState {
            restricted: actual_restricted,
            since: None,
            applied_action_id: None,
            ..persisted.clone()
        }
    }
}

/// The record with the period `from`..`to` spent unprotected added, in whole seconds
/// (the nearest: the period is known only to the precision of the alive stamps).
pub fn with_unprotected(
    persisted: &EnforcementState,
    from: Timestamp,
    to: Timestamp,
) -> EnforcementState {
    let from = from.min(to);
    let ticks = to.ticks() - from.ticks();
    let seconds = (ticks as u64 + 5_000_000) / 10_000_000;
    EnforcementState {
        unprotected_seconds: persisted.unprotected_seconds.saturating_add(seconds),
        last_unprotected: Some(UnprotectedPeriod { from, to }),
        ..persisted.clone()
    }
}

/// The server's allowlist as the enforcer takes it: lower-case SHA-256 hex, sorted,
/// without duplicates; also how many entries were not SHA-256 hashes.
pub fn allowlist_hashes(list: &AllowlistResponse) -> (Vec<String>, usize) {
    let mut hashes: Vec<String> = list
        .sha256
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let before = hashes.len();
    hashes.retain(|h| is_sha256_hex(h));
    let rejected = before - hashes.len();
    hashes.sort();
    hashes.dedup();
    (hashes, rejected)
}

/// The block and audit rules of a policy that are in force at a given time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileRules {
    /// Deny executing these files, restricted or not. Sorted by hash, one rule a hash.
    pub block: Vec<FileRule>,
    /// Allow and report executing these files. No hash is also blocked.
    pub audit: Vec<FileRule>,
    /// Blocks not applied because they name a file the host needs, with that file.
    pub refused: Vec<(FileRule, ProtectedFile)>,
    /// Rules whose hash is not a SHA-256.
    pub malformed: usize,
    /// When the rules in force change without the server: the earliest future
    /// expiry among them and the policy's `nextExpiry` (which also covers the
    /// allowlist, hence a fetch then).
    pub next_change: Option<Timestamp>,
}

/// The rules of `list` in force at `now`: hashes normalised, expired rules dropped
/// (so that expiry needs no server call), block beating audit for the same file, and
/// blocks of `protected` files refused: the agent never blocks what keeps the host
/// manageable, whatever the server sent.
pub fn file_rules(
    list: &AllowlistResponse,
    protected: &[ProtectedFile],
    now: Timestamp,
) -> FileRules {
    let mut out = FileRules::default();
    let mut next_change = list.next_expiry.filter(|t| *t > now);
    let mut take = |rules: &[FileRule], out: &mut FileRules| -> Vec<FileRule> {
        let mut kept: Vec<FileRule> = Vec::new();
        for rule in rules {
            let sha256 = rule.sha256.trim().to_ascii_lowercase();
            if !is_sha256_hex(&sha256) {
                out.malformed += 1;
                continue;
            }
            if let Some(expires) = rule.expires {
                if expires <= now {
                    continue;
                }
                next_change = Some(next_change.map_or(expires, |t| t.min(expires)));
            }
            kept.push(FileRule {
                sha256,
                ..rule.clone()
            });
        }
        kept.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        kept.dedup_by(|a, b| a.sha256 == b.sha256);
        kept
    };
    let block = take(&list.block, &mut out);
    let mut audit = take(&list.audit, &mut out);
    for rule in block {
        match protected.iter().find(|p| p.sha256 == rule.sha256) {
            Some(file) => out.refused.push((rule, file.clone())),
            None => out.block.push(rule),
        }
    }
    // A refused block leaves an audit of the same file alone: it was never in force.
    audit.retain(|a| {
        out.block
            .binary_search_by(|b| b.sha256.cmp(&a.sha256))
            .is_err()
    });
    out.audit = audit;
    out.next_change = next_change;
    out
}

/// How long from `now` until `at` (zero if it is past).
pub fn time_until(now: Timestamp, at: Timestamp) -> std::time::Duration {
    let ticks = at.ticks().saturating_sub(now.ticks()).max(0) as u64;
    std::time::Duration::from_nanos(ticks.saturating_mul(100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_proto::agent::ProtectedRole;
    use appfence_proto::ActionStatus;

    fn command(t: ActionType) -> Command {
        Command {
            action_id: "a1".into(),
            action_type: t,
            status: ActionStatus::Pending,
            created: Timestamp::from_unix_seconds(1),
        }
    }

    fn ack(applied: bool, status: ActionStatus) -> ActionUpdateResponse {
        ActionUpdateResponse {
            action_id: "a1".into(),
            status,
            applied,
            desired: DesiredState::default(),
        }
    }

    fn desired(restricted: bool, id: Option<&str>) -> DesiredState {
        DesiredState {
            restricted,
            action_id: id.map(str::to_string),
            ..DesiredState::default()
        }
    }

    fn state(restricted: bool, id: Option<&str>) -> EnforcementState {
        EnforcementState {
            restricted,
            since: Some(Timestamp::from_unix_seconds(10)),
            applied_action_id: id.map(str::to_string),
            ..EnforcementState::default()
        }
    }

    #[test]
    fn applied_acks_apply_the_requested_state() {
        let ok = ack(true, ActionStatus::InProgress);
        assert_eq!(
            decide(&command(ActionType::RestrictCodeExecution), &ok),
            Step::Apply { restricted: true }
        );
        assert_eq!(
            decide(&command(ActionType::UnrestrictCodeExecution), &ok),
            Step::Apply { restricted: false }
        );
    }

    #[test]
    fn an_applied_offboard_offboards() {
        assert_eq!(
            decide(
                &command(ActionType::Offboard),
                &ack(true, ActionStatus::InProgress)
            ),
            Step::Offboard
        );
        assert_eq!(requested_state(ActionType::Offboard), None);
    }

    #[test]
    fn closed_actions_are_never_applied() {
        for status in [
            ActionStatus::Cancelled,
            ActionStatus::TimeOut,
            ActionStatus::Succeeded,
        ] {
            for t in ActionType::ALL {
                assert_eq!(decide(&command(t), &ack(false, status)), Step::Skip);
            }
        }
    }

    #[test]
    fn unsupported_actions_are_rejected_with_e_notimpl() {
        match decide(
            &command(ActionType::Isolate),
            &ack(true, ActionStatus::InProgress),
        ) {
            Step::Reject {
                error_h_result,
                troubleshoot_info,
            } => {
                assert_eq!(error_h_result, -2147467263);
                assert!(troubleshoot_info.contains("Isolate"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn convergence_applies_only_when_enforcement_differs() {
        assert_eq!(
            convergence(false, &state(false, None), &desired(true, Some("r"))),
            Convergence::Apply { restricted: true }
        );
        assert_eq!(
            convergence(true, &state(true, Some("r")), &desired(false, Some("u"))),
            Convergence::Apply { restricted: false }
        );
        assert_eq!(
            convergence(true, &state(true, Some("r")), &desired(true, Some("r"))),
            Convergence::InSync
        );
        assert_eq!(
            convergence(
                false,
                &EnforcementState::default(),
                &DesiredState::default()
            ),
            Convergence::InSync
        );
        // Right enforcement, stale record.
        assert_eq!(
            convergence(true, &state(true, Some("old")), &desired(true, Some("new"))),
            Convergence::Record
        );
        // The enforcer lost the restriction the record claims, and the server agrees.
        assert_eq!(
            convergence(false, &state(true, Some("r")), &desired(false, Some("u"))),
            Convergence::Record
        );
    }

    #[test]
    fn since_moves_only_with_the_state() {
        let now = Timestamp::from_unix_seconds(99);
        let kept = next_state(&state(true, Some("r1")), true, Some("r2".into()), now);
        assert_eq!(kept.since, Some(Timestamp::from_unix_seconds(10)));
        assert_eq!(kept.applied_action_id.as_deref(), Some("r2"));
        let moved = next_state(&state(true, Some("r1")), false, Some("u".into()), now);
        assert_eq!((moved.restricted, moved.since), (false, Some(now)));
        let first = next_state(&EnforcementState::default(), false, None, now);
        assert_eq!(first.since, Some(now));
    }

    #[test]
    fn reported_state_tells_the_truth() {
        let mut s = state(true, Some("r"));
        s.allowlist_version = 4;
        s.unprotected_seconds = 9;
        assert_eq!(reported_state(true, &s), s);
        let lost = reported_state(false, &s);
        assert!(!lost.restricted && lost.applied_action_id.is_none());
        assert_eq!((lost.allowlist_version, lost.unprotected_seconds), (4, 9));
    }

    #[test]
    fn unprotected_periods_add_up_in_whole_seconds() {
        let t = Timestamp::from_unix_seconds;
        let once = with_unprotected(&state(true, Some("r")), t(100), t(160));
        assert_eq!(once.unprotected_seconds, 60);
        let period = once.last_unprotected.clone().unwrap();
        assert_eq!((period.from, period.to), (t(100), t(160)));
        // Rounded to the nearest second; a clock that went back counts nothing.
        let twice = with_unprotected(
            &once,
            t(200),
            t(200).plus(std::time::Duration::from_millis(600)),
        );
        assert_eq!(
            with_unprotected(
                &once,
                t(200),
                t(200).plus(std::time::Duration::from_millis(400))
            )
            .unprotected_seconds,
            60
        );
        assert_eq!(twice.unprotected_seconds, 61);
        let back = with_unprotected(&twice, t(300), t(250));
        assert_eq!(back.unprotected_seconds, 61);
        assert!(back.restricted && back.applied_action_id.as_deref() == Some("r"));
    }

    #[test]
    fn allowlists_are_normalised_and_checked() {
        let a = "ab".repeat(32);
        let list = AllowlistResponse {
            version: 2,
            sha256: vec![a.to_uppercase(), "nope".into(), a.clone(), format!(" {a}")],
            ..AllowlistResponse::default()
        };
        assert_eq!(allowlist_hashes(&list), (vec![a], 1));
    }

    fn rule(hash: &str, id: &str, expires: Option<i64>) -> FileRule {
        FileRule {
            sha256: hash.to_string(),
            action: "Block".into(),
            indicator_id: id.into(),
            generate_alert: false,
            expires: expires.map(Timestamp::from_unix_seconds),
        }
    }

    #[test]
    fn file_rules_drop_expired_and_malformed_and_block_beats_audit() {
        let (a, b, c) = ("aa".repeat(32), "bb".repeat(32), "cc".repeat(32));
        let t = Timestamp::from_unix_seconds;
        let list = AllowlistResponse {
            version: 7,
            block: vec![
                rule(&a.to_uppercase(), "1", None),
                rule(&b, "2", Some(100)),
                rule("nope", "3", None),
                rule(&c, "4", Some(50)),
            ],
            audit: vec![rule(&a, "5", None), rule(&c, "6", Some(300))],
            next_expiry: Some(t(80)),
            ..AllowlistResponse::default()
        };
        let at = |now| file_rules(&list, &[], t(now));
        let early = at(10);
        let blocked: Vec<&str> = early
            .block
            .iter()
            .map(|r| r.indicator_id.as_str())
            .collect();
        assert_eq!(blocked, vec!["1", "2", "4"]);
        assert_eq!(early.block[0].sha256, a, "normalised to lower case");
        assert!(
            early.audit.is_empty(),
            "block beats audit: {:?}",
            early.audit
        );
        assert_eq!(early.malformed, 1);
        assert_eq!(early.next_change, Some(t(50)));
        // Past c's block: its audit applies; b's expiry is next, then none but the audit's.
        let later = at(60);
        let blocked: Vec<&str> = later
            .block
            .iter()
            .map(|r| r.indicator_id.as_str())
            .collect();
        assert_eq!(blocked, vec!["1", "2"]);
        assert_eq!(later.audit.len(), 1);
        assert_eq!(later.audit[0].indicator_id, "6");
        assert_eq!(later.next_change, Some(t(80)), "the policy's nextExpiry");
        let last = at(100);
        assert_eq!(last.block.len(), 1, "expiry is exclusive of its instant");
        assert_eq!(last.next_change, Some(t(300)));
        assert_eq!(at(400).next_change, None);
    }

    #[test]
    fn blocks_of_protected_files_are_refused() {
        let (agent, other) = ("ab".repeat(32), "cd".repeat(32));
        let protected = vec![ProtectedFile {
            sha256: agent.clone(),
            path: "/usr/bin/appfence".into(),
            role: ProtectedRole::Agent,
        }];
        let list = AllowlistResponse {
            block: vec![rule(&agent, "1", None), rule(&other, "2", None)],
            audit: vec![rule(&agent, "3", None)],
            ..AllowlistResponse::default()
        };
        let rules = file_rules(&list, &protected, Timestamp::from_unix_seconds(1));
        assert_eq!(rules.block.len(), 1);
        assert_eq!(rules.block[0].sha256, other);
        assert_eq!(rules.refused.len(), 1);
        assert_eq!(rules.refused[0].0.indicator_id, "1");
        assert_eq!(rules.refused[0].1.role, ProtectedRole::Agent);
        // Auditing a protected file harms nothing: it stays.
        assert_eq!(rules.audit.len(), 1);
        assert_eq!(rules.audit[0].indicator_id, "3");
    }

    #[test]
    fn time_until_counts_from_now_and_never_below_zero() {
        let t = Timestamp::from_unix_seconds;
        assert_eq!(time_until(t(10), t(12)), std::time::Duration::from_secs(2));
        assert_eq!(time_until(t(12), t(10)), std::time::Duration::ZERO);
    }
}
