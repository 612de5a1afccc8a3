//! `vm.memfd_noexec`: at 2, no memfd can be executed, which closes running a program
//! that never touched a filesystem. Set while restricted; the previous value is put
//! back after. The sysctl is per PID namespace (Linux 6.3 and later); older kernels lack
//! it, and that is reported rather than treated as a failure.

use std::io;
use std::path::PathBuf;

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
}

impl MemfdSysctl {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MemfdSysctl { path: path.into() }
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
        let Some(previous) = self.read()? else {
            return Ok(MemfdChange::Unsupported);
        };
        if previous != NOEXEC_ENFORCED {
            self.write(NOEXEC_ENFORCED)?;
        }
        Ok(MemfdChange::Restricted { previous })
    }

    pub fn restore(&self, change: MemfdChange) -> io::Result<()> {
        match change {
            MemfdChange::Unsupported => Ok(()),
            MemfdChange::Restricted { previous } => self.write(previous),
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
    fn a_missing_sysctl_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let sysctl = MemfdSysctl::new(dir.path().join("absent"));
        assert_eq!(sysctl.restrict().unwrap(), MemfdChange::Unsupported);
        sysctl.restore(MemfdChange::Unsupported).unwrap();
        assert!(!dir.path().join("absent").exists());
    }
}
