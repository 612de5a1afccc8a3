//! `vm.memfd_noexec`: at 2, no memfd can be executed, which closes running a program
//! that never touched a filesystem. Set while restricted; the previous value is put
//! back after. The sysctl is per PID namespace (Linux 6.3 and later); older kernels lack
//! it, and that is reported rather than treated as a failure.
//!
//! The previous value can also be kept in a file (the agent's state directory): an agent
//! killed while restricted leaves the sysctl at 2, and the next run must put back the
//! administrator's value rather than "restore" 2. The file is written durably before the
//! sysctl is changed and removed once the value is back.

use std::io;
use std::path::{Path, PathBuf};

/// The value that forbids executing any memfd.
const NOEXEC_ENFORCED: u8 = 2;

/// What restricting did to the sysctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemfdChange {
    /// The kernel has no `memfd_noexec`.
    Unsupported,
    /// Set to 2; `previous` is put back on restore.
    Restricted { previous: u8 },
}

impl MemfdChange {
    pub fn describe(&self) -> String {
        match self {
            MemfdChange::Unsupported => "memfd_noexec unsupported by this kernel".into(),
            MemfdChange::Restricted { previous } => {
                format!("memfd_noexec {previous}->{NOEXEC_ENFORCED}")
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct MemfdSysctl {
    path: PathBuf,
    /// Where the value to restore is kept while restricted, if anywhere.
    saved: Option<PathBuf>,
}

impl MemfdSysctl {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MemfdSysctl {
            path: path.into(),
            saved: None,
        }
    }

    /// Keeps the value to restore in `saved` while restricted.
    pub fn with_saved_value(mut self, saved: Option<&Path>) -> Self {
        self.saved = saved.map(Path::to_path_buf);
        self
    }

    /// The value saved by an earlier run, if there is a readable one.
    fn load_saved(&self) -> Option<u8> {
        let path = self.saved.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(text) => match text.trim().parse() {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(file = %path.display(), "ignoring an unreadable saved memfd_noexec value");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the saved memfd_noexec value");
                None
            }
        }
    }

    fn forget_saved(&self) {
        if let Some(path) = &self.saved {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove the saved memfd_noexec value")
                }
            }
        }
    }

    /// The value to put back later, given the current one: at 2 with a saved value, the
    /// 2 is a leftover of a run that could not restore, and the saved value is the real
    /// one. Any other current value is the administrator's (a reboot reset it, say).
    fn value_to_restore(&self, current: u8) -> u8 {
        if current == NOEXEC_ENFORCED {
            if let Some(saved) = self.load_saved() {
                return saved;
            }
        }
        current
    }

    /// Puts back the value a run killed while restricted left saved. `Some(value)` when
    /// the sysctl was changed.
    pub fn recover(&self) -> io::Result<Option<u8>> {
        let Some(saved) = self.load_saved() else {
            return Ok(None);
        };
        let changed = if self.read()? == Some(NOEXEC_ENFORCED) && saved != NOEXEC_ENFORCED {
            self.write(saved)?;
            Some(saved)
        } else {
            None
        };
        self.forget_saved();
        Ok(changed)
    }

    /// The current value; `None` if the kernel has no such sysctl.
    pub fn read(&self) -> io::Result<Option<u8>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                text.trim().parse().map(Some).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, text.trim().to_string())
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn restrict(&self) -> io::Result<MemfdChange> {
        let Some(current) = self.read()? else {
            return Ok(MemfdChange::Unsupported);
        };
        let previous = self.value_to_restore(current);
        if let Some(path) = &self.saved {
            crate::state::write_atomic(path, format!("{previous}\n").as_bytes(), 0o600)?;
        }
        if current != NOEXEC_ENFORCED {
            self.write(NOEXEC_ENFORCED)?;
        }
        Ok(MemfdChange::Restricted { previous })
    }

    pub fn restore(&self, change: MemfdChange) -> io::Result<()> {
        match change {
            MemfdChange::Unsupported => Ok(()),
            MemfdChange::Restricted { previous } => {
                self.write(previous)?;
                self.forget_saved();
                Ok(())
            }
        }
    }

    fn write(&self, value: u8) -> io::Result<()> {
        // Not `fs::write`: a sysctl must be written in place, never created.
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
        file.write_all(format!("{value}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_then_restore_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memfd_noexec");
        std::fs::write(&path, "1\n").unwrap();
        let sysctl = MemfdSysctl::new(&path);
        let change = sysctl.restrict().unwrap();
        assert_eq!(change, MemfdChange::Restricted { previous: 1 });
        assert_eq!(sysctl.read().unwrap(), Some(2));
        assert_eq!(change.describe(), "memfd_noexec 1->2");
        sysctl.restore(change).unwrap();
        assert_eq!(sysctl.read().unwrap(), Some(1));
    }

    #[test]
    fn the_saved_value_survives_a_run_that_could_not_restore() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memfd_noexec");
        let saved = dir.path().join("memfd_noexec.saved");
        std::fs::write(&path, "1\n").unwrap();
        let sysctl = MemfdSysctl::new(&path).with_saved_value(Some(&saved));
        // First run: restricts, then is killed (no restore).
        assert_eq!(
            sysctl.restrict().unwrap(),
            MemfdChange::Restricted { previous: 1 }
        );
        assert_eq!(std::fs::read_to_string(&saved).unwrap(), "1\n");
        assert_eq!(sysctl.read().unwrap(), Some(2));
        // Next run restricts again: the value to restore is still 1, not 2.
        let change = sysctl.restrict().unwrap();
        assert_eq!(change, MemfdChange::Restricted { previous: 1 });
        sysctl.restore(change).unwrap();
        assert_eq!(sysctl.read().unwrap(), Some(1));
        assert!(
            !saved.exists(),
            "the saved value is forgotten once restored"
        );
    }

    #[test]
    fn recover_puts_back_a_leftover_and_ignores_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memfd_noexec");
        let saved = dir.path().join("memfd_noexec.saved");
        let sysctl = MemfdSysctl::new(&path).with_saved_value(Some(&saved));
        // Killed while restricted: 2 is a leftover.
        std::fs::write(&path, "2\n").unwrap();
        std::fs::write(&saved, "0\n").unwrap();
        assert_eq!(sysctl.recover().unwrap(), Some(0));
        assert_eq!(sysctl.read().unwrap(), Some(0));
        assert!(!saved.exists());
        // A reboot reset the sysctl to the administrator's value: leave it.
        std::fs::write(&path, "1\n").unwrap();
        std::fs::write(&saved, "0\n").unwrap();
        assert_eq!(sysctl.recover().unwrap(), None);
        assert_eq!(sysctl.read().unwrap(), Some(1));
        assert!(!saved.exists());
        // Restricting after a reset saves the current value, not the stale one.
        std::fs::write(&saved, "0\n").unwrap();
        assert_eq!(
            sysctl.restrict().unwrap(),
            MemfdChange::Restricted { previous: 1 }
        );
        assert_eq!(std::fs::read_to_string(&saved).unwrap(), "1\n");
        // Nothing saved: nothing to recover.
        std::fs::remove_file(&saved).unwrap();
        assert_eq!(sysctl.recover().unwrap(), None);
    }

    #[test]
    fn a_missing_sysctl_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let sysctl = MemfdSysctl::new(dir.path().join("absent"));
        assert_eq!(sysctl.restrict().unwrap(), MemfdChange::Unsupported);
        sysctl.restore(MemfdChange::Unsupported).unwrap();
        assert!(!dir.path().join("absent").exists());
    }
}
