//! A lab certificate authority in one step (`appfence tls init`): a private CA and a
//! server certificate signed by it, for the names and addresses given. For trying
//! HTTPS end to end; production deployments use their own PKI.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// What `tls init` writes, in PEM.
pub struct LabFiles {
    pub ca_cert: String,
    pub ca_key: String,
    pub server_cert: String,
    pub server_key: String,
    /// What `--server-key-sha256` pins.
    pub server_key_sha256: String,
    pub not_after: OffsetDateTime,
}

/// A CA (valid `days` + 1) and a server certificate for `hosts` (DNS names or IP
/// addresses, valid `days`), from `now`.
pub fn generate(hosts: &[String], days: u32, now: OffsetDateTime) -> Result<LabFiles, String> {
    if hosts.is_empty() {
        return Err("name at least one host (--host NAME or an IP address)".into());
    }
    if days == 0 {
        return Err("the certificate must be valid for at least one day".into());
    }
    let not_before = now - Duration::minutes(5);
    let not_after = now + Duration::days(i64::from(days));
    fn err(what: &'static str) -> impl Fn(rcgen::Error) -> String {
        move |e| format!("cannot make the {what}: {e}")
    }

    let ca_key = KeyPair::generate().map_err(err("CA key"))?;
    let mut ca = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("appfence lab CA ({})", hosts[0]),
    );
    ca.distinguished_name = name;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after + Duration::days(1);
    let ca_cert = ca.self_signed(&ca_key).map_err(err("CA certificate"))?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().map_err(err("server key"))?;
    let mut server = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, hosts[0].clone());
    server.distinguished_name = name;
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if is_dns_name(host) => SanType::DnsName(
                host.clone()
                    .try_into()
                    .map_err(|e| format!("{host:?} is not a usable DNS name: {e}"))?,
            ),
            Err(_) => return Err(format!("{host:?} is neither a DNS name nor an IP address")),
        };
        server.subject_alt_names.push(san);
    }
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = not_before;
    server.not_after = not_after;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .map_err(err("server certificate"))?;
    let server_key_sha256 = crate::x509::public_key_sha256(server_cert.der())?;
    Ok(LabFiles {
        ca_cert: ca_cert.pem(),
        ca_key: issuer.key().serialize_pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        server_key_sha256,
        not_after,
    })
}

/// Labels of letters, digits and hyphens (a leading `*.` for a wildcard).
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_and_clear_errors() {
        let now = time::macros::datetime!(2026-12-07 12:00 UTC);
        let lab = generate(&["appfence.lab".into(), "127.0.0.1".into()], 30, now).unwrap();
        assert!(lab.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(lab.server_key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(lab.not_after.date().to_string(), "2027-01-06");
        assert_eq!(lab.server_key_sha256.len(), 64);
        assert!(generate(&[], 30, now)
            .err()
            .unwrap()
            .contains("at least one host"));
        assert!(generate(&["a.lab".into()], 0, now)
            .err()
            .unwrap()
            .contains("one day"));
        assert!(generate(&["not a name!".into()], 1, now)
            .err()
            .unwrap()
            .contains("neither"));
    }
}
