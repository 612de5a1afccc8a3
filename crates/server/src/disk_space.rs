//! Early warning before the data directory's disk fills: its free space is read at each
//! sweep (`statvfs`), published as `appfence_storage_free_bytes`, and when it falls below
//! the threshold a warning is logged once (and `appfence_storage_low` is 1) until it
//! rises above again.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// When free space is low.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeSpaceWarning {
    /// The smaller of 5% of the filesystem and 256 MiB.
    Default,
    /// Below this many bytes.
    Bytes(u64),
    /// Below this percentage of the filesystem's size.
    Percent(u8),
    /// Never warn.
    Off,
}

pub const DEFAULT_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_PERCENT: u8 = 5;

impl FreeSpaceWarning {
    /// The threshold in bytes on a filesystem of `total` bytes; `None` when off.
    pub fn threshold(self, total: u64) -> Option<u64> {
        let percent = |p: u8| total / 100 * u64::from(p);
        match self {
            FreeSpaceWarning::Default => Some(DEFAULT_BYTES.min(percent(DEFAULT_PERCENT))),
            FreeSpaceWarning::Bytes(b) => Some(b),
            FreeSpaceWarning::Percent(p) => Some(percent(p)),
            FreeSpaceWarning::Off => None,
        }
    }
}

impl std::str::FromStr for FreeSpaceWarning {
    type Err = String;

    /// `off`, a percentage (`5%`) or a size (`256MiB`, `1GiB`, `500MB`, `1048576`).
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let hint = "write e.g. 256MiB, 2GiB, 5% or off";
        if text.eq_ignore_ascii_case("off") {
            return Ok(FreeSpaceWarning::Off);
        }
        if let Some(number) = text.strip_suffix('%') {
            return match number.trim().parse::<u8>() {
                Ok(p) if (1..=99).contains(&p) => Ok(FreeSpaceWarning::Percent(p)),
                _ => Err(format!(
                    "invalid free-space threshold {s:?}: a percentage is 1% to 99%"
                )),
            };
        }
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("invalid free-space threshold {s:?}; {hint}"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "t" | "tb" => 1000 * 1000 * 1000 * 1000,
            "tib" => 1 << 40,
            _ => return Err(format!("invalid free-space threshold {s:?}; {hint}")),
        };
        number
            .checked_mul(scale)
            .map(FreeSpaceWarning::Bytes)
            .ok_or_else(|| format!("free-space threshold {s:?} is too large"))
    }
}

/// Free and total bytes of the filesystem holding `path` (for an unprivileged user).
pub fn free_space(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a valid NUL-terminated path and a zeroed struct for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

pub struct DiskSpace {
    warning: FreeSpaceWarning,
    low: AtomicBool,
}

impl DiskSpace {
    pub fn new(warning: FreeSpaceWarning) -> Self {
        DiskSpace {
            warning,
            low: AtomicBool::new(false),
        }
    }

    /// Reads the free space of `dir`'s filesystem and warns on a change to low.
    pub fn check(&self, dir: &Path) {
        let Ok((free, total)) = free_space(dir) else {
            return;
        };
        metrics::gauge!("appfence_storage_free_bytes").set(free as f64);
        let Some(threshold) = self.warning.threshold(total) else {
            return;
        };
        let low = free < threshold;
        // The gauge first: whoever reads the warning line finds the metric agreeing.
        metrics::gauge!("appfence_storage_low").set(if low { 1.0 } else { 0.0 });
        if low != self.low.swap(low, Ordering::SeqCst) {
            if low {
                tracing::warn!(
                    dir = %dir.display(), free_bytes = free, threshold_bytes = threshold,
                    "the data directory's disk is nearly full ({} MiB free): free space before writes fail",
                    free / (1024 * 1024)
                );
            } else {
                tracing::info!(dir = %dir.display(), free_bytes = free, "the data directory's disk has space again");
            }
        }
    }

    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let gib = 1024 * 1024 * 1024;
        // 5% of 1 GiB is under 256 MiB; 5% of 100 GiB is over.
        assert_eq!(
            FreeSpaceWarning::Default.threshold(gib),
            Some(gib / 100 * 5)
        );
        assert_eq!(
            FreeSpaceWarning::Default.threshold(100 * gib),
            Some(DEFAULT_BYTES)
        );
        assert_eq!(FreeSpaceWarning::Bytes(7).threshold(gib), Some(7));
        assert_eq!(FreeSpaceWarning::Percent(10).threshold(1000), Some(100));
        assert_eq!(FreeSpaceWarning::Off.threshold(gib), None);
    }

    #[test]
    fn thresholds_are_parsed_with_clear_errors() {
        let p = |s: &str| s.parse::<FreeSpaceWarning>();
        assert_eq!(p("off"), Ok(FreeSpaceWarning::Off));
        assert_eq!(p("5%"), Ok(FreeSpaceWarning::Percent(5)));
        assert_eq!(p("256MiB"), Ok(FreeSpaceWarning::Bytes(256 << 20)));
        assert_eq!(p("2 GiB"), Ok(FreeSpaceWarning::Bytes(2 << 30)));
        assert_eq!(p("500MB"), Ok(FreeSpaceWarning::Bytes(500_000_000)));
        assert_eq!(p("4096"), Ok(FreeSpaceWarning::Bytes(4096)));
        assert!(p("0%").unwrap_err().contains("1% to 99%"));
        assert!(p("lots").unwrap_err().contains("256MiB"));
        assert!(p("5 furlongs").unwrap_err().contains("256MiB"));
        assert!(p("99999999999TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn low_is_reported_on_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = free_space(dir.path()).unwrap();
        assert!(free > 0);
        let d = DiskSpace::new(FreeSpaceWarning::Bytes(u64::MAX));
        d.check(dir.path());
        assert!(d.is_low());
        let d = DiskSpace::new(FreeSpaceWarning::Bytes(0));
        d.check(dir.path());
        assert!(!d.is_low());
    }
}
