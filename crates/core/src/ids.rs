//! Identifiers: machine ids (40 lower-case hex), GUIDs, and the three ways a caller may
//! name a machine.

pub use rand_free::random_bytes;

use crate::Error;

/// How a request names a machine: MDE accepts the machine id, the `aadDeviceId` or the
/// `computerDnsName` in the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineRef {
    Id(String),
    AadDeviceId(String),
    DnsName(String),
}

impl MachineRef {
    /// Classifies a path segment; anything that is neither an id nor a GUID nor a
    /// plausible host name is `InvalidInput`.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if is_machine_id(raw) {
            return Ok(MachineRef::Id(raw.to_string()));
        }
        if let Some(g) = parse_guid(raw) {
            return Ok(MachineRef::AadDeviceId(g));
        }
        if is_dns_name(raw) {
            return Ok(MachineRef::DnsName(raw.to_ascii_lowercase()));
        }
        Err(Error::InvalidInput(format!(
            "Machine id '{}' is not a machine id (40 hex characters), a GUID or a DNS name",
            truncate(raw, 80)
        )))
    }
}

pub fn is_machine_id(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Returns the GUID in canonical lower-case form if `s` is one.
pub fn parse_guid(s: &str) -> Option<String> {
    uuid::Uuid::parse_str(s)
        .ok()
        .filter(|_| s.len() == 36)
        .map(|u| u.hyphenated().to_string())
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

pub fn new_guid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

pub fn new_machine_id() -> String {
    random_bytes::<20>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

mod rand_free {
    /// Random bytes from the v4 UUID generator, which draws from the OS's CSPRNG; this
    /// keeps `core` free of a second randomness dependency.
    pub fn random_bytes<const N: usize>() -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(16) {
            let u = uuid::Uuid::new_v4();
            chunk.copy_from_slice(&u.as_bytes()[..chunk.len()]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_machine_references() {
        let id = new_machine_id();
        assert_eq!(MachineRef::parse(&id), Ok(MachineRef::Id(id.clone())));
        assert_eq!(
            MachineRef::parse("0B5F7A31-8D2C-4C3E-9A55-1E2D3C4B5A69"),
            Ok(MachineRef::AadDeviceId(
                "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69".into()
            ))
        );
        assert_eq!(
            MachineRef::parse("Srv-01.corp.example"),
            Ok(MachineRef::DnsName("srv-01.corp.example".into()))
        );
        assert!(matches!(
            MachineRef::parse("not a name!"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(MachineRef::parse(""), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn machine_ids_are_40_hex() {
        let id = new_machine_id();
        assert!(is_machine_id(&id));
        assert_ne!(id, new_machine_id());
    }
}
