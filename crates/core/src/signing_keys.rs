//! The life of the built-in issuer's signing keys, decided from the stored keys and the
//! time alone.
//!
//! A rotation adds a key that *activates* later (after every replica has read it, so no
//! replica meets a token signed with a key it does not know yet) and gives the keys it
//! replaces a `verify_until`: the end of the longest-lived token they can still sign.
//! After that they verify nothing and the sweeper retires them (destroying the private
//! part). A key retired by hand stops verifying at once.

use std::time::Duration;

use appfence_proto::Timestamp;

use crate::records::SigningKey;

/// Where a key is in its life at some time, for `keys list` and the JWKS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Signs new tokens (and verifies).
    Signing,
    /// Published and verifying, signs from `activates` on.
    Next { activates: Timestamp },
    /// Replaced: verifies tokens it signed until `until`, signs nothing.
    Verifying { until: Timestamp },
    /// Verifies nothing: retired by hand or by the sweeper, or past `verify_until`.
    Retired { at: Timestamp },
}

impl SigningKey {
    /// Whether tokens signed with this key are accepted at `now`.
    pub fn verifies_at(&self, now: Timestamp) -> bool {
        self.retired.is_none() && self.verify_until.is_none_or(|until| now < until)
    }

    /// Whether this key may sign at `now` (the newest such key does).
    fn may_sign_at(&self, now: Timestamp) -> bool {
        self.verifies_at(now) && self.sealed_private_key.is_some() && self.activates <= now
    }
}

/// Orders keys newest first: by activation, then creation.
fn newest_first(a: &SigningKey, b: &SigningKey) -> std::cmp::Ordering {
    (b.activates, b.created).cmp(&(a.activates, a.created))
}

/// The key that signs at `now`: the newest activated key that has not been replaced;
/// while a replacement waits for its activation, the key it replaces (which still has
/// a token lifetime to go).
///
/// If no key is activated yet (the clock stepped back since the newest key was made),
/// the earliest one signs rather than none.
pub fn signer_at(keys: &[SigningKey], now: Timestamp) -> Option<&SigningKey> {
    keys.iter()
        .filter(|k| k.may_sign_at(now))
        .max_by_key(|k| (k.verify_until.is_none(), k.activates, k.created))
        .or_else(|| {
            keys.iter()
                .filter(|k| k.verifies_at(now) && k.sealed_private_key.is_some())
                .min_by_key(|k| (k.activates, k.created))
        })
}

/// Whether `signer` is a key on its way out: a replacement has been added, and it
/// signs only until that replacement activates.
pub fn is_outgoing(signer: &SigningKey) -> bool {
    signer.verify_until.is_some()
}

/// The newest key that is not retired, activated or not: what a rotation replaces.
pub fn newest_unretired(keys: &[SigningKey]) -> Option<&SigningKey> {
    keys.iter()
        .filter(|k| k.retired.is_none())
        .min_by(|a, b| newest_first(a, b))
}

/// The state of `key` among `keys` at `now`.
pub fn state_at(key: &SigningKey, keys: &[SigningKey], now: Timestamp) -> KeyState {
    if let Some(at) = key.retired {
        return KeyState::Retired { at };
    }
    if let Some(until) = key.verify_until {
        if now >= until {
            return KeyState::Retired { at: until };
        }
    }
    // The signing key first: a waiting key signs early when nothing else can (its
    // predecessor was retired by hand).
    if signer_at(keys, now).is_some_and(|s| s.kid == key.kid) {
        return KeyState::Signing;
    }
    if key.activates > now {
        return KeyState::Next {
            activates: key.activates,
        };
    }
    KeyState::Verifying {
        until: key.verify_until.unwrap_or(now),
    }
}

/// How long key changes take to reach every replica, and how long tokens live: what
/// the times of a rotation are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationTiming {
    /// Every replica re-reads the keys at least this often (the revocation bound).
    pub refresh_interval: Duration,
    /// The lifetime of issued tokens.
    pub token_lifetime: Duration,
}

/// When a key added by a rotation at `now` takes over, and until when the keys it
/// replaces keep verifying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPlan {
    pub activates: Timestamp,
    pub superseded_until: Timestamp,
}

impl RotationTiming {
    /// A scheduled or requested rotation: the new key is published two refresh
    /// intervals before it signs; the old one verifies for a token lifetime after
    /// that, plus one refresh interval for a replica that read the change late.
    pub fn rotation(&self, now: Timestamp) -> RotationPlan {
        let activates = now.plus(self.refresh_interval * 2);
        RotationPlan {
            activates,
            superseded_until: activates.plus(self.token_lifetime + self.refresh_interval),
        }
    }

    /// A replacement that must sign at once (the signing key was retired by hand, or
    /// no key can sign): it activates now.
    pub fn immediate(&self, now: Timestamp) -> RotationPlan {
        RotationPlan {
            activates: now,
            superseded_until: now.plus(self.token_lifetime + self.refresh_interval),
        }
    }
}

/// Whether a key that signs at once must be added: nothing can sign, or the signing
/// key is on its way out with no replacement waiting (the replacement was retired).
pub fn needs_immediate_key(keys: &[SigningKey], now: Timestamp) -> bool {
    match signer_at(keys, now) {
        None => true,
        Some(signer) if is_outgoing(signer) => !keys.iter().any(|k| {
            k.retired.is_none() && k.verify_until.is_none() && k.sealed_private_key.is_some()
        }),
        Some(_) => false,
    }
}

/// Whether a scheduled rotation is due at `now`: the signing key has signed for
/// `period` and no newer key is waiting to take over.
pub fn rotation_due(keys: &[SigningKey], now: Timestamp, period: Duration) -> bool {
    let Some(signer) = signer_at(keys, now) else {
        return false;
    };
    let waiting = keys
        .iter()
        .any(|k| k.retired.is_none() && k.verify_until.is_none() && k.activates > now);
    !waiting && !is_outgoing(signer) && signer.activates.plus(period) <= now
}

/// Keys that verify nothing any more but still hold a private part or are not marked
/// retired: the sweeper retires them.
pub fn expired(keys: &[SigningKey], now: Timestamp) -> Vec<&SigningKey> {
    keys.iter()
        .filter(|k| k.retired.is_none() && k.verify_until.is_some_and(|u| now >= u))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_700_000_000 + seconds)
    }

    fn key(kid: &str, activates: i64) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            algorithm: "EdDSA".into(),
            public_key: vec![0; 32],
            sealed_private_key: Some(vec![1; 72]),
            kek_id: Some("k".into()),
            created: t(activates),
            activates: t(activates),
            verify_until: None,
            retired: None,
        }
    }

    fn timing() -> RotationTiming {
        RotationTiming {
            refresh_interval: Duration::from_secs(10),
            token_lifetime: Duration::from_secs(3599),
        }
    }

    #[test]
    fn the_newest_activated_key_signs() {
        let old = key("old", 0);
        let mut next = key("next", 100);
        next.created = t(50);
        let keys = vec![old.clone(), next.clone()];
        assert_eq!(signer_at(&keys, t(99)).unwrap().kid, "old");
        assert_eq!(signer_at(&keys, t(100)).unwrap().kid, "next");
        assert_eq!(newest_unretired(&keys).unwrap().kid, "next");
        assert_eq!(
            state_at(&next, &keys, t(99)),
            KeyState::Next { activates: t(100) }
        );
        assert_eq!(state_at(&old, &keys, t(99)), KeyState::Signing);
    }

    #[test]
    fn a_rotation_publishes_first_and_keeps_old_tokens_valid() {
        let plan = timing().rotation(t(0));
        assert_eq!(plan.activates, t(20));
        assert_eq!(plan.superseded_until, t(20 + 3599 + 10));
        let mut old = key("old", -1000);
        old.verify_until = Some(plan.superseded_until);
        let mut new = key("new", 20);
        new.created = t(0);
        let keys = vec![old.clone(), new];
        // Before activation the old key still signs; after it, it only verifies.
        assert_eq!(signer_at(&keys, t(19)).unwrap().kid, "old");
        assert_eq!(signer_at(&keys, t(20)).unwrap().kid, "new");
        assert_eq!(
            state_at(&old, &keys, t(20)),
            KeyState::Verifying {
                until: plan.superseded_until
            }
        );
        // A token signed at t(19) expires at t(19 + 3599), before the old key retires.
        assert!(old.verifies_at(t(19 + 3599)));
        assert!(!old.verifies_at(plan.superseded_until));
        assert_eq!(
            state_at(&old, &keys, plan.superseded_until),
            KeyState::Retired {
                at: plan.superseded_until
            }
        );
        assert_eq!(
            expired(&keys, plan.superseded_until)
                .iter()
                .map(|k| k.kid.as_str())
                .collect::<Vec<_>>(),
            ["old"]
        );
        assert!(expired(&keys, t(3000)).is_empty());
    }

    #[test]
    fn retired_and_unsealed_keys_never_sign() {
        let mut retired = key("r", 10);
        retired.retired = Some(t(20));
        let mut unsealed = key("u", 5);
        unsealed.sealed_private_key = None;
        let plain = key("p", 0);
        let keys = vec![retired.clone(), unsealed, plain];
        assert_eq!(signer_at(&keys, t(30)).unwrap().kid, "p");
        assert!(!retired.verifies_at(t(15)));
        assert_eq!(
            state_at(&retired, &keys, t(15)),
            KeyState::Retired { at: t(20) }
        );
        assert!(signer_at(&[retired], t(30)).is_none());
        // A clock that stepped back before every activation: the earliest key signs.
        let early = key("early", 100);
        let later = key("later", 200);
        assert_eq!(signer_at(&[later, early], t(50)).unwrap().kid, "early");
        let plan = timing().immediate(t(30));
        assert_eq!(plan.activates, t(30));
    }

    #[test]
    fn a_replaced_key_never_signs_once_its_replacement_can() {
        // A pending key P got an end because an immediate replacement R was added
        // (the signing key was retired by hand): R signs, P never does.
        let mut pending = key("p", 100);
        pending.verify_until = Some(t(5000));
        let mut replacement = key("r", 30);
        replacement.created = t(30);
        let keys = vec![pending, replacement];
        assert_eq!(signer_at(&keys, t(50)).unwrap().kid, "r");
        assert_eq!(signer_at(&keys, t(200)).unwrap().kid, "r");
    }

    #[test]
    fn an_immediate_key_is_needed_only_when_nothing_will_sign() {
        assert!(needs_immediate_key(&[], t(0)));
        let mut old = key("old", 0);
        assert!(!needs_immediate_key(std::slice::from_ref(&old), t(1)));
        // During a rotation's lead time the outgoing key signs: nothing to add.
        old.verify_until = Some(t(5000));
        let next = key("next", 20);
        assert!(!needs_immediate_key(&[old.clone(), next.clone()], t(10)));
        // The waiting key was retired: the outgoing key must not sign on.
        let mut gone = next;
        gone.retired = Some(t(11));
        assert!(needs_immediate_key(&[old.clone(), gone], t(12)));
        let mut retired = old;
        retired.retired = Some(t(1));
        assert!(needs_immediate_key(&[retired], t(2)));
    }

    #[test]
    fn a_waiting_key_signs_early_once_its_predecessor_is_retired() {
        let mut old = key("old", 0);
        old.retired = Some(t(5));
        let next = key("next", 20);
        let keys = vec![old, next.clone()];
        assert!(
            !needs_immediate_key(&keys, t(6)),
            "the waiting key can sign"
        );
        assert_eq!(signer_at(&keys, t(6)).unwrap().kid, "next");
        assert_eq!(state_at(&next, &keys, t(6)), KeyState::Signing);
    }

    #[test]
    fn rotation_is_due_after_the_period_unless_a_key_waits() {
        let period = 90 * 24 * 60 * MIN;
        let signer = key("s", 0);
        let keys = vec![signer.clone()];
        assert!(!rotation_due(&keys, t(0).plus(period - MIN), period));
        assert!(rotation_due(&keys, t(0).plus(period), period));
        let mut waiting = key("w", 0);
        waiting.activates = t(0).plus(period + MIN);
        let keys = vec![signer, waiting];
        assert!(!rotation_due(&keys, t(0).plus(period), period));
        assert!(
            !rotation_due(&[], t(0), period),
            "nothing signs: not a rotation"
        );
    }
}
