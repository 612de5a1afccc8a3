//! The decision cache, owned by the reader thread: what is known about a file version,
//! keyed on (device, inode, ctime, size). Any write changes the ctime, so a modified file
//! is a new key.

use std::collections::HashMap;

use super::digest::Sha256Hash;
use super::sys::FileStat;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
    pub size: u64,
}

impl From<&FileStat> for FileKey {
    fn from(st: &FileStat) -> Self {
        FileKey {
            dev: st.dev,
            ino: st.ino,
            ctime_sec: st.ctime_sec,
            ctime_nsec: st.ctime_nsec,
            size: st.size,
        }
    }
}

/// Whether a file is trusted, with its SHA-256 if it was computed, and the file rule
/// that names that SHA-256, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trust {
    pub trusted: bool,
    pub sha256: Option<Sha256Hash>,
    pub rule: Option<RuleHit>,
}

/// A file rule that applies to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleHit {
    Block,
    Audit,
}

/// What has been learnt about one file version; each part is filled when first needed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Knowledge {
    pub elf: Option<bool>,
    pub trust: Option<Trust>,
}

impl Knowledge {
    fn merge(&mut self, other: Knowledge) {
        self.elf = other.elf.or(self.elf);
        self.trust = other.trust.or(self.trust);
    }
}

/// The kind of permission event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec,
    Open,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// The verdict `knowledge` supports for an event of `kind`, if it is enough to decide.
/// A blocked file is denied, restricted or not, trusted or not (block beats allow), as
/// an exec and as an ELF object opened (`ld.so ./x`). Otherwise, while `restricting`,
/// executing needs trust and opening is denied only for an untrusted ELF object; while
/// not, anything hashed and not blocked is allowed.
pub fn verdict_for(kind: EventKind, knowledge: &Knowledge, restricting: bool) -> Option<Verdict> {
    if knowledge.trust.and_then(|t| t.rule) == Some(RuleHit::Block) {
        return match (kind, knowledge.elf) {
            (EventKind::Exec, _) | (EventKind::Open, Some(true)) => Some(Verdict::Deny),
            (EventKind::Open, Some(false)) => Some(Verdict::Allow),
            (EventKind::Open, None) => None,
        };
    }
    if !restricting {
        return match (kind, knowledge.trust, knowledge.elf) {
            (_, Some(_), _) | (EventKind::Open, None, Some(false)) => Some(Verdict::Allow),
            _ => None,
        };
    }
    let trusted = knowledge.trust.map(|t| t.trusted);
    match (kind, trusted, knowledge.elf) {
        (_, Some(true), _) => Some(Verdict::Allow),
        (EventKind::Exec, Some(false), _) => Some(Verdict::Deny),
        (EventKind::Exec, None, _) => None,
        (EventKind::Open, _, Some(false)) => Some(Verdict::Allow),
        (EventKind::Open, Some(false), Some(true)) => Some(Verdict::Deny),
        (EventKind::Open, _, _) => None,
    }
}

#[derive(Debug)]
pub struct DecisionCache {
    entries: HashMap<FileKey, Knowledge>,
    capacity: usize,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> Self {
        DecisionCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: &FileKey) -> Option<Knowledge> {
        self.entries.get(key).copied()
    }

    /// Adds what was learnt. When full, starts over: stale versions of rewritten files
    /// would otherwise pile up, and a miss only costs one more hash.
    pub fn learn(&mut self, key: FileKey, knowledge: Knowledge) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        self.entries.entry(key).or_default().merge(knowledge);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> FileKey {
        FileKey {
            dev: 1,
            ino,
            ctime_sec: 2,
            ctime_nsec: 3,
            size: 4,
        }
    }

    const TRUSTED: Trust = Trust {
        trusted: true,
        sha256: None,
        rule: None,
    };
    const UNTRUSTED: Trust = Trust {
        trusted: false,
        sha256: None,
        rule: None,
    };

    fn verdict_for(kind: EventKind, knowledge: &Knowledge) -> Option<Verdict> {
        super::verdict_for(kind, knowledge, true)
    }

    #[test]
    fn blocks_beat_trust_and_apply_unrestricted() {
        let blocked = |trusted, elf| Knowledge {
            elf,
            trust: Some(Trust {
                trusted,
                sha256: None,
                rule: Some(RuleHit::Block),
            }),
        };
        for restricting in [true, false] {
            for trusted in [true, false] {
                let k = blocked(trusted, None);
                let v = |kind, k: &Knowledge| super::verdict_for(kind, k, restricting);
                assert_eq!(v(EventKind::Exec, &k), Some(Verdict::Deny));
                assert_eq!(v(EventKind::Open, &k), None, "an ELF check first");
                assert_eq!(
                    v(EventKind::Open, &blocked(trusted, Some(true))),
                    Some(Verdict::Deny)
                );
                assert_eq!(
                    v(EventKind::Open, &blocked(trusted, Some(false))),
                    Some(Verdict::Allow)
                );
            }
        }
        // Unrestricted: whatever is hashed and not blocked runs; audits too.
        let audited = Knowledge {
            elf: Some(true),
            trust: Some(Trust {
                rule: Some(RuleHit::Audit),
                ..UNTRUSTED
            }),
        };
        let untrusted = Knowledge {
            elf: Some(true),
            trust: Some(UNTRUSTED),
        };
        for k in [audited, untrusted] {
            assert_eq!(
                super::verdict_for(EventKind::Exec, &k, false),
                Some(Verdict::Allow)
            );
            assert_eq!(
                super::verdict_for(EventKind::Open, &k, false),
                Some(Verdict::Allow)
            );
        }
        assert_eq!(
            super::verdict_for(EventKind::Exec, &untrusted, true),
            Some(Verdict::Deny)
        );
        assert_eq!(
            super::verdict_for(EventKind::Exec, &Knowledge::default(), false),
            None,
            "not hashed yet"
        );
    }

    #[test]
    fn verdicts_follow_the_rules() {
        let nothing = Knowledge::default();
        assert_eq!(verdict_for(EventKind::Exec, &nothing), None);
        assert_eq!(verdict_for(EventKind::Open, &nothing), None);
        let text = Knowledge {
            elf: Some(false),
            trust: None,
        };
        assert_eq!(verdict_for(EventKind::Open, &text), Some(Verdict::Allow));
        assert_eq!(
            verdict_for(EventKind::Exec, &text),
            None,
            "scripts need trust"
        );
        let unknown_elf = Knowledge {
            elf: Some(true),
            trust: Some(UNTRUSTED),
        };
        assert_eq!(
            verdict_for(EventKind::Open, &unknown_elf),
            Some(Verdict::Deny)
        );
        assert_eq!(
            verdict_for(EventKind::Exec, &unknown_elf),
            Some(Verdict::Deny)
        );
        let known_elf = Knowledge {
            elf: Some(true),
            trust: Some(TRUSTED),
        };
        assert_eq!(
            verdict_for(EventKind::Open, &known_elf),
            Some(Verdict::Allow)
        );
        // The open that follows an allowed exec needs no ELF check.
        let executed = Knowledge {
            elf: None,
            trust: Some(TRUSTED),
        };
        assert_eq!(
            verdict_for(EventKind::Open, &executed),
            Some(Verdict::Allow)
        );
        let refused = Knowledge {
            elf: None,
            trust: Some(UNTRUSTED),
        };
        assert_eq!(
            verdict_for(EventKind::Open, &refused),
            None,
            "text is readable"
        );
    }

    #[test]
    fn knowledge_accumulates_and_the_cache_is_bounded() {
        let mut cache = DecisionCache::new(2);
        cache.learn(
            key(1),
            Knowledge {
                elf: Some(true),
                trust: None,
            },
        );
        cache.learn(
            key(1),
            Knowledge {
                elf: None,
                trust: Some(TRUSTED),
            },
        );
        assert_eq!(
            cache.get(&key(1)),
            Some(Knowledge {
                elf: Some(true),
                trust: Some(TRUSTED)
            })
        );
        cache.learn(key(2), Knowledge::default());
        assert_eq!(cache.len(), 2);
        cache.learn(key(3), Knowledge::default());
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&key(1)).is_none());
        let changed = FileKey {
            ctime_nsec: 9,
            ..key(3)
        };
        assert!(
            cache.get(&changed).is_none(),
            "a new ctime is a new file version"
        );
    }
}
