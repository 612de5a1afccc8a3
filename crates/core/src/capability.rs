//! Whether a device can carry out a restrict-family action, from what its agent reported.

use crate::records::MachineRecord;
use crate::Error;

/// `OsPlatformNotSupported` if the device's agent says it cannot enforce;
/// `ClientVersionNotSupported` if its agent is older than `min_agent_version`.
pub fn check_can_restrict(machine: &MachineRecord, min_agent_version: &str) -> Result<(), Error> {
    if !machine.capabilities.can_restrict_execution {
        return Err(Error::OsPlatformNotSupported(format!(
            "Machine {} ({} {}) cannot restrict code execution: its agent reports no enforcement capability",
            machine.id, machine.os_platform, machine.os_version
        )));
    }
    if version_less(&machine.agent_version, min_agent_version) {
        return Err(Error::ClientVersionNotSupported(format!(
            "Machine {} runs agent version {}; restricting code execution needs {} or newer",
            machine.id, machine.agent_version, min_agent_version
        )));
    }
    Ok(())
}

/// Compares dotted numeric versions (`0.10.2` > `0.9`); a missing or non-numeric part
/// counts as 0, so an unparseable version is treated as the oldest.
pub fn version_less(have: &str, need: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let (mut a, mut b) = (parse(have), parse(need));
    a.resize(3, 0);
    b.resize(3, 0);
    a < b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_less("0.9.0", "0.10.0"));
        assert!(!version_less("0.10.0", "0.9.9"));
        assert!(!version_less("1.2", "1.2.0"));
        assert!(version_less("garbage", "0.0.1"));
        assert!(!version_less("0.1.0-beta", "0.1.0"));
    }
}
