//! The predefined set: what may run while the device is restricted. A file is trusted
//! if its SHA-256 is on the server's allowlist, if it is the agent's own binary, or if
//! a package manager lists it and its content still has the digest recorded: dpkg's
//! MD5, rpm's SHA-256 (MD5 or SHA-512 for some packages).

use std::collections::{HashMap, HashSet};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::cache::RuleHit;
use super::digest::{hash_file, HashOutcome, Sha256Hash};
use super::dpkg::PackageIndex;
use super::rpm::{RpmIndex, Verification};

/// Why a file is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustReason {
    Allowlist,
    Agent,
    Package,
}

/// What checking a file against the set concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustOutcome {
    Decided {
        /// `None`: not in the set.
        reason: Option<TrustReason>,
        sha256: Option<Sha256Hash>,
        /// The block or audit rule naming `sha256`, if any.
        rule: Option<RuleHit>,
        /// Whether the conclusion holds for as long as the file is unchanged (a read
        /// error does not).
        cacheable: bool,
    },
    /// Hashing did not finish before the deadline.
    Undecided,
}

/// The server's allowlist, shared with the enforcer so it can be replaced at runtime.
pub type SharedAllowlist = Arc<RwLock<HashSet<Sha256Hash>>>;

/// What an event of a file rule carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub indicator_id: String,
    pub generate_alert: bool,
}

/// The block and audit rules in force; no hash is in both.
#[derive(Clone, Debug, Default)]
pub struct RuleTable {
    pub block: HashMap<Sha256Hash, RuleInfo>,
    pub audit: HashMap<Sha256Hash, RuleInfo>,
}

impl RuleTable {
    pub fn is_empty(&self) -> bool {
        self.block.is_empty() && self.audit.is_empty()
    }

    pub fn lookup(&self, sha256: &Sha256Hash) -> Option<(RuleHit, &RuleInfo)> {
        if let Some(info) = self.block.get(sha256) {
            Some((RuleHit::Block, info))
        } else {
            self.audit.get(sha256).map(|info| (RuleHit::Audit, info))
        }
    }
}

/// The rules, shared with the enforcer so they can be replaced at runtime.
pub type SharedRules = Arc<RwLock<RuleTable>>;

#[derive(Debug)]
pub struct TrustSet {
    packages: PackageIndex,
    rpm: Arc<RpmIndex>,
    agent_sha256: Option<Sha256Hash>,
    allowlist: SharedAllowlist,
    rules: SharedRules,
    hash_size_limit: u64,
}

impl TrustSet {
    pub fn new(
        packages: PackageIndex,
        rpm: Arc<RpmIndex>,
        agent_sha256: Option<Sha256Hash>,
        allowlist: SharedAllowlist,
        hash_size_limit: u64,
    ) -> TrustSet {
        TrustSet {
            packages,
            rpm,
            agent_sha256,
            allowlist,
            rules: SharedRules::default(),
            hash_size_limit,
        }
    }

    /// The same set, also telling which files the block and audit `rules` name.
    pub fn with_rules(mut self, rules: SharedRules) -> TrustSet {
        self.rules = rules;
        self
    }

    /// The rule naming `sha256`, as an event reports it.
    pub fn rule_info(&self, sha256: &Sha256Hash) -> Option<(RuleHit, RuleInfo)> {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        rules.lookup(sha256).map(|(hit, info)| (hit, info.clone()))
    }

    fn rule_for(&self, sha256: &Sha256Hash) -> Option<RuleHit> {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        rules.lookup(sha256).map(|(hit, _)| hit)
    }

    /// Checks the open `file` (at `path`, as the kernel names it, if known).
    pub fn check(
        &self,
        file: BorrowedFd<'_>,
        size: u64,
        path: Option<&Path>,
        deadline: Instant,
    ) -> TrustOutcome {
        let packaged_md5 = path.and_then(|p| self.packages.md5_for(p));
        let rpm_digests = path.and_then(|p| self.rpm.digests_for(p));
        match hash_file(
            file,
            size,
            packaged_md5.is_some() || rpm_digests.is_some_and(|d| d.wants_md5()),
            self.hash_size_limit,
            deadline,
        ) {
            HashOutcome::Done(digests) => {
                let rule = self.rule_for(&digests.sha256);
                let on_allowlist = self
                    .allowlist
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&digests.sha256);
                let reason = if on_allowlist {
                    Some(TrustReason::Allowlist)
                } else if self.agent_sha256 == Some(digests.sha256) {
                    Some(TrustReason::Agent)
                } else if packaged_md5.is_some() && packaged_md5 == digests.md5.as_ref() {
                    Some(TrustReason::Package)
                } else if let Some(recorded) = rpm_digests {
                    match recorded.verify(file, &digests, self.hash_size_limit, deadline) {
                        Verification::Matches => Some(TrustReason::Package),
                        Verification::Differs => None,
                        Verification::TimedOut => return TrustOutcome::Undecided,
                        Verification::Failed(e) => {
                            tracing::debug!(error = %e, "cannot read a file to verify it; not trusted");
                            return TrustOutcome::Decided {
                                reason: None,
                                sha256: Some(digests.sha256),
                                rule,
                                cacheable: false,
                            };
                        }
                    }
                } else {
                    None
                };
                TrustOutcome::Decided {
                    reason,
                    sha256: Some(digests.sha256),
                    rule,
                    cacheable: true,
                }
            }
            HashOutcome::TooLarge => TrustOutcome::Decided {
                reason: None,
                sha256: None,
                rule: None,
                cacheable: true,
            },
            HashOutcome::Failed(e) => {
                tracing::debug!(error = %e, "cannot read a file to hash it; not trusted");
                TrustOutcome::Decided {
                    reason: None,
                    sha256: None,
                    rule: None,
                    cacheable: false,
                }
            }
            HashOutcome::TimedOut => TrustOutcome::Undecided,
        }
    }
}

/// SHA-256 of the running executable (the agent trusts itself).
pub fn own_executable_sha256(size_limit: u64) -> Option<Sha256Hash> {
    use std::os::fd::AsFd;
    let file = std::fs::File::open("/proc/self/exe").ok()?;
    let size = file.metadata().ok()?.len();
    let far = Instant::now() + std::time::Duration::from_secs(60);
    match hash_file(file.as_fd(), size, false, size_limit, far) {
        HashOutcome::Done(d) => Some(d.sha256),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    use sha2::Digest;

    fn sha256(bytes: &[u8]) -> Sha256Hash {
        sha2::Sha256::digest(bytes).into()
    }

    #[test]
    fn allowlist_agent_and_package_files_are_trusted_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info).unwrap();
        let packaged = dir.path().join("packaged");
        std::fs::write(&packaged, b"abc").unwrap();
        std::fs::write(
            info.join("p.md5sums"),
            format!(
                "900150983cd24fb0d6963f7d28e17f72  {}\n",
                packaged.display().to_string().trim_start_matches('/')
            ),
        )
        .unwrap();
        let index = PackageIndex::load_dpkg(dir.path(), dir.path()).unwrap();
        // Both package managers at once: each vouches for its own files.
        let rpm_sha256 = Path::new("/usr/bin/from-rpm");
        let rpm_md5 = Path::new("/usr/bin/from-old-rpm");
        let rpm_sha512 = Path::new("/usr/bin/from-rpm-512");
        let rpm = RpmIndex::from_output(
            format!(
                "{}\t8\t{}\t-rwxr-xr-x\n\
                 {}\t(none)\t{}\t-rwxr-xr-x\n\
                 {}\t10\t{}\t-rwxr-xr-x\n",
                rpm_sha256.display(),
                hex::encode(sha256(b"xyz")),
                rpm_md5.display(),
                hex::encode(md5::Md5::digest(b"xyz")),
                rpm_sha512.display(),
                hex::encode(sha2::Sha512::digest(b"xyz")),
            )
            .as_bytes(),
        );
        let allowlist: SharedAllowlist = Default::default();
        allowlist.write().unwrap().insert(sha256(b"allowed"));
        let set = TrustSet::new(
            index,
            Arc::new(rpm),
            Some(sha256(b"agent")),
            allowlist.clone(),
            1 << 20,
        );

        let check = |bytes: &[u8], path: Option<&Path>| {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(bytes).unwrap();
            match set.check(f.as_fd(), bytes.len() as u64, path, far()) {
                TrustOutcome::Decided { reason, sha256, .. } => {
                    assert_eq!(sha256, Some(super::tests::sha256(bytes)));
                    reason
                }
                TrustOutcome::Undecided => panic!("undecided"),
            }
        };
        assert_eq!(check(b"allowed", None), Some(TrustReason::Allowlist));
        assert_eq!(check(b"agent", None), Some(TrustReason::Agent));
        assert_eq!(check(b"abc", Some(&packaged)), Some(TrustReason::Package));
        assert_eq!(check(b"abd", Some(&packaged)), None, "content changed");
        assert_eq!(check(b"abc", Some(Path::new("/elsewhere"))), None);
        for rpm_path in [rpm_sha256, rpm_md5, rpm_sha512] {
            assert_eq!(
                check(b"xyz", Some(rpm_path)),
                Some(TrustReason::Package),
                "{rpm_path:?}"
            );
            assert_eq!(check(b"xyw", Some(rpm_path)), None, "{rpm_path:?} changed");
        }
        assert_eq!(
            check(b"abc", Some(rpm_sha256)),
            None,
            "another file's content"
        );
        allowlist.write().unwrap().clear();
        assert_eq!(check(b"allowed", None), None, "the allowlist is live");
    }

    #[test]
    fn this_systems_packaged_true_is_trusted() {
        let Ok(index) = PackageIndex::load_dpkg(Path::new("/"), Path::new("/")) else {
            println!("skipped: no dpkg database here");
            return;
        };
        let set = TrustSet::new(
            index,
            Arc::new(RpmIndex::default()),
            None,
            Default::default(),
            256 << 20,
        );
        let file = std::fs::File::open("/bin/true").unwrap();
        // What the kernel reports for the file: on merged-/usr, /usr/bin/true.
        let path = std::fs::canonicalize("/bin/true").unwrap();
        let size = file.metadata().unwrap().len();
        let outcome = set.check(file.as_fd(), size, Some(&path), far());
        assert!(
            matches!(
                outcome,
                TrustOutcome::Decided {
                    reason: Some(TrustReason::Package),
                    ..
                }
            ),
            "{path:?}: {outcome:?}"
        );
    }

    #[test]
    fn the_running_executable_can_be_hashed() {
        assert!(own_executable_sha256(1 << 34).is_some());
    }
}
