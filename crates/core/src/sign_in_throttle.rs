//! Throttled guessing: the arithmetic of account lockouts and per-address limits on the
//! endpoints that check a password or a secret.
//!
//! - An **account** (a user of one tenant) is locked after `account_failures` wrong
//!   passwords within `failure_window`: for `lockout`, doubling with every lockout
//!   that follows without a successful sign-in in between (capped at `max_lockout`), as
//!   Entra ID's smart lockout does. While locked, even the right password is refused,
//!   and attempts neither count nor extend the lock.
//! - A **source address** that fails `address_failures` times within `address_window`
//!   (any account, any client) is refused at once, without any check, until that
//!   window ends.
//!
//! Counters live in the store (so they hold across replicas); this module decides.

use std::time::Duration;

use appfence_proto::Timestamp;

/// The limits. Defaults follow Entra ID's smart lockout: 10 failures, 60 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub account_failures: u32,
    pub failure_window: Duration,
    pub lockout: Duration,
    pub max_lockout: Duration,
    pub address_failures: u32,
    pub address_window: Duration,
    /// A lockout level (the doubling) is forgotten after this long without a lockout.
    pub forget_after: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            account_failures: 10,
            failure_window: Duration::from_secs(10 * 60),
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(60 * 60),
            address_failures: 30,
            address_window: Duration::from_secs(60),
            forget_after: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The counters of one key: `user:<tenant>:<upn>` or `addr:<address>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleRecord {
    pub key: String,
    /// Failures in the current window.
    pub failures: u32,
    pub window_start: Timestamp,
    pub locked_until: Option<Timestamp>,
    /// Lockouts in a row (each doubles the next).
    pub lockouts: u32,
    /// The last lockout's end was recorded in the audit log.
    pub lock_end_recorded: bool,
}

/// A user account whose failures are counted: the name as presented, whether or not
/// such a user exists (so that a lockout tells nothing about who exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignInAccount {
    pub tenant_id: String,
    /// Trimmed, lower case.
    pub name: String,
}

impl SignInAccount {
    pub fn new(tenant_id: &str, name: &str) -> Self {
        SignInAccount {
            tenant_id: tenant_id.to_string(),
            name: name.trim().to_lowercase(),
        }
    }

    /// The store key: `user:<tenant>:<name>`.
    pub fn key(&self) -> String {
        format!("user:{}:{}", self.tenant_id, self.name)
    }
}

/// The store key of a source address. IPv6 clients usually hold a whole /64, so they
/// are counted per /64.
pub fn address_key(addr: std::net::IpAddr) -> String {
    match addr {
        std::net::IpAddr::V4(v4) => format!("addr:{v4}"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("addr:{v4}"),
            None => {
                let s = v6.segments();
                format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Whether an attempt may be checked at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// The account is locked until then.
    Locked(Timestamp),
    /// The source address is over its limit until then.
    Throttled(Timestamp),
}

/// What a failure did to an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountFailure {
    pub record: ThrottleRecord,
    /// Set when this failure locked the account: until when.
    pub locked_until: Option<Timestamp>,
}

impl ThrottlePolicy {
    pub fn account_verdict(&self, record: Option<&ThrottleRecord>, now: Timestamp) -> Verdict {
        match record.and_then(|r| r.locked_until) {
            Some(until) if now < until => Verdict::Locked(until),
            _ => Verdict::Allowed,
        }
    }

    pub fn address_verdict(&self, record: Option<&ThrottleRecord>, now: Timestamp) -> Verdict {
        match record {
            Some(r) if r.failures >= self.address_failures => {
                let until = r.window_start.plus(self.address_window);
                if now < until {
                    Verdict::Throttled(until)
                } else {
                    Verdict::Allowed
                }
            }
            _ => Verdict::Allowed,
        }
    }

    /// Counts a wrong password for an account that was not locked.
    pub fn after_account_failure(
        &self,
        key: &str,
        record: Option<ThrottleRecord>,
        now: Timestamp,
    ) -> AccountFailure {
        let mut r = record.unwrap_or_else(|| fresh(key, now));
        if let Some(until) = r.locked_until {
            if now >= until.plus(self.forget_after) {
                r.lockouts = 0;
            }
        }
        if now >= r.window_start.plus(self.failure_window) {
            r.failures = 0;
            r.window_start = now;
        }
        r.failures += 1;
        let mut locked_until = None;
        if r.failures >= self.account_failures {
            let until = now.plus(self.lockout_for(r.lockouts));
            r.locked_until = Some(until);
            r.lockouts = r.lockouts.saturating_add(1);
            r.lock_end_recorded = false;
            r.failures = 0;
            r.window_start = now;
            locked_until = Some(until);
        }
        AccountFailure {
            record: r,
            locked_until,
        }
    }

    /// Counts a failure from a source address that was not throttled.
    pub fn after_address_failure(
        &self,
        key: &str,
        record: Option<ThrottleRecord>,
        now: Timestamp,
    ) -> ThrottleRecord {
        let mut r = record.unwrap_or_else(|| fresh(key, now));
        if now >= r.window_start.plus(self.address_window) {
            r.failures = 0;
            r.window_start = now;
        }
        r.failures += 1;
        r
    }

    /// The length of the lockout after `previous` lockouts in a row: `lockout`,
    /// doubled each time, at most `max_lockout`.
    pub fn lockout_for(&self, previous: u32) -> Duration {
        let factor = 1u32.checked_shl(previous.min(31)).unwrap_or(u32::MAX);
        self.lockout
            .checked_mul(factor)
            .map_or(self.max_lockout, |d| d.min(self.max_lockout))
    }

    /// Whether a record can be deleted at `now`: nothing it holds still matters.
    pub fn is_stale(&self, r: &ThrottleRecord, now: Timestamp) -> bool {
        let window = self.failure_window.max(self.address_window);
        let window_over = now >= r.window_start.plus(window);
        let lock_forgotten = r
            .locked_until
            .is_none_or(|until| now >= until.plus(self.forget_after));
        window_over && lock_forgotten && r.lock_end_recorded
    }
}

fn fresh(key: &str, now: Timestamp) -> ThrottleRecord {
    ThrottleRecord {
        key: key.to_string(),
        failures: 0,
        window_start: now,
        locked_until: None,
        lockouts: 0,
        lock_end_recorded: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_700_000_000 + seconds)
    }

    fn fail_n(
        p: &ThrottlePolicy,
        mut r: Option<ThrottleRecord>,
        n: u32,
        at: i64,
    ) -> AccountFailure {
        let mut last = None;
        for _ in 0..n {
            let f = p.after_account_failure("user:t:ana", r.take(), t(at));
            r = Some(f.record.clone());
            last = Some(f);
        }
        last.unwrap()
    }

    #[test]
    fn ten_failures_lock_for_a_minute_then_double() {
        let p = ThrottlePolicy::default();
        let nine = fail_n(&p, None, 9, 0);
        assert_eq!(nine.locked_until, None);
        assert_eq!(
            p.account_verdict(Some(&nine.record), t(0)),
            Verdict::Allowed
        );
        let tenth = fail_n(&p, Some(nine.record), 1, 1);
        assert_eq!(tenth.locked_until, Some(t(61)));
        assert_eq!(
            p.account_verdict(Some(&tenth.record), t(60)),
            Verdict::Locked(t(61))
        );
        assert_eq!(
            p.account_verdict(Some(&tenth.record), t(61)),
            Verdict::Allowed
        );
        // Ten more after the lock: two minutes, then four.
        let again = fail_n(&p, Some(tenth.record), 10, 70);
        assert_eq!(again.locked_until, Some(t(70 + 120)));
        let third = fail_n(&p, Some(again.record), 10, 200);
        assert_eq!(third.locked_until, Some(t(200 + 240)));
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let p = ThrottlePolicy::default();
        let five = fail_n(&p, None, 5, 0);
        let later = fail_n(&p, Some(five.record), 5, 600);
        assert_eq!(
            later.locked_until, None,
            "the first five fell out of the window"
        );
        assert_eq!(later.record.failures, 5);
    }

    #[test]
    fn the_doubling_is_capped_and_forgotten_after_a_quiet_day() {
        let p = ThrottlePolicy::default();
        assert_eq!(p.lockout_for(0), Duration::from_secs(60));
        assert_eq!(p.lockout_for(1), Duration::from_secs(120));
        assert_eq!(p.lockout_for(6), Duration::from_secs(3600), "capped");
        assert_eq!(p.lockout_for(40), Duration::from_secs(3600));
        let first = fail_n(&p, None, 10, 0);
        assert_eq!(first.record.lockouts, 1);
        let next_day = fail_n(&p, Some(first.record), 10, 60 + 24 * 3600);
        assert_eq!(next_day.locked_until, Some(t(60 + 24 * 3600 + 60)));
    }

    #[test]
    fn an_address_is_throttled_until_its_window_ends() {
        let p = ThrottlePolicy::default();
        let mut r = None;
        for i in 0..30 {
            assert_eq!(p.address_verdict(r.as_ref(), t(i)), Verdict::Allowed);
            r = Some(p.after_address_failure("addr:x", r, t(i)));
        }
        assert_eq!(
            p.address_verdict(r.as_ref(), t(30)),
            Verdict::Throttled(t(60))
        );
        assert_eq!(p.address_verdict(r.as_ref(), t(60)), Verdict::Allowed);
        let r = p.after_address_failure("addr:x", r, t(60));
        assert_eq!(r.failures, 1, "a new window");
    }

    #[test]
    fn keys_name_the_account_and_the_network() {
        assert_eq!(
            SignInAccount::new("t1", " Ana@Corp ").key(),
            "user:t1:ana@corp"
        );
        assert_eq!(address_key("10.1.2.3".parse().unwrap()), "addr:10.1.2.3");
        assert_eq!(
            address_key("2001:db8:1:2:aa::1".parse().unwrap()),
            "addr:2001:db8:1:2::/64"
        );
        assert_eq!(
            address_key("::ffff:10.0.0.1".parse().unwrap()),
            "addr:10.0.0.1"
        );
    }

    #[test]
    fn records_become_stale_once_nothing_in_them_matters() {
        let p = ThrottlePolicy::default();
        let one = p.after_account_failure("k", None, t(0)).record;
        assert!(!p.is_stale(&one, t(599)));
        assert!(p.is_stale(&one, t(600)));
        let locked = fail_n(&p, None, 10, 0).record;
        assert!(
            !p.is_stale(&locked, t(600)),
            "the lockout level still counts"
        );
        let mut ended = locked.clone();
        ended.lock_end_recorded = true;
        assert!(!p.is_stale(&ended, t(600)));
        assert!(p.is_stale(&ended, t(60 + 24 * 3600)));
    }
}
