//! Reading an X.509 certificate's validity and public key from its DER (RFC 5280,
//! section 4.1), with yasna: rustls verifies certificates but does not expose these.

use time::OffsetDateTime;

/// `notBefore` and `notAfter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

struct Fields {
    validity: Validity,
    spki: Vec<u8>,
}

fn time_of(r: yasna::BERReader<'_, '_>) -> yasna::ASN1Result<OffsetDateTime> {
    use yasna::tags::{TAG_GENERALIZEDTIME, TAG_UTCTIME};
    let tag = r.lookahead_tag()?;
    let unix = if tag == TAG_UTCTIME {
        r.read_utctime()?.datetime().unix_timestamp()
    } else if tag == TAG_GENERALIZEDTIME {
        r.read_generalized_time()?.datetime().unix_timestamp()
    } else {
        return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
    };
    OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|_| yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid))
}

fn fields(der: &[u8]) -> Result<Fields, String> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let fields = r.next().read_sequence(|r| {
                // version [0] EXPLICIT, optional (absent in v1 certificates)
                let _ = r.read_optional(|r| r.read_tagged_der())?;
                let _serial = r.next().read_der()?;
                let _signature = r.next().read_der()?;
                let _issuer = r.next().read_der()?;
                let validity = r.next().read_sequence(|r| {
                    let not_before = time_of(r.next())?;
                    let not_after = time_of(r.next())?;
                    Ok(Validity {
                        not_before,
                        not_after,
                    })
                })?;
                let _subject = r.next().read_der()?;
                let spki = r.next().read_der()?;
                // issuerUniqueID, subjectUniqueID, extensions: not needed.
                while r.read_optional(|r| r.read_der())?.is_some() {}
                Ok(Fields { validity, spki })
            })?;
            let _algorithm = r.next().read_der()?;
            let _signature = r.next().read_der()?;
            Ok(fields)
        })
    })
    .map_err(|e| format!("not an X.509 certificate ({e})"))
}

/// When the certificate is valid.
pub fn validity(der: &[u8]) -> Result<Validity, String> {
    Ok(fields(der)?.validity)
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo, in lower-case hex: what
/// `--server-key-sha256` pins (it survives renewing the certificate with the same key).
pub fn public_key_sha256(der: &[u8]) -> Result<String, String> {
    use sha2::Digest;
    Ok(hex::encode(sha2::Sha256::digest(fields(der)?.spki)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_and_key_of_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2024, 1, 2);
        params.not_after = rcgen::date_time_ymd(2051, 3, 4);
        let cert = params.self_signed(&key).unwrap();
        let v = validity(cert.der()).unwrap();
        assert_eq!(v.not_before.date().to_string(), "2024-01-02");
        // After 2049, GeneralizedTime.
        assert_eq!(v.not_after.date().to_string(), "2051-03-04");
        use rcgen::PublicKeyData;
        use sha2::Digest;
        let expected = hex::encode(sha2::Sha256::digest(key.subject_public_key_info()));
        assert_eq!(public_key_sha256(cert.der()).unwrap(), expected);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(validity(b"").is_err());
        assert!(validity(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert!(public_key_sha256(&[0xff; 40])
            .unwrap_err()
            .contains("not an X.509"));
    }
}
