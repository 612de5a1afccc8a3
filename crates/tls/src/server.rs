//! The server's certificate: loaded from PEM files, checked, and swapped on reload.
//!
//! rustls asks [`ReloadableCert`] for the certificate at each handshake, so a reload
//! changes what new connections get and leaves open ones alone. A pair that fails any
//! check is refused with a message naming the file and the problem, and the pair in
//! force stays.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

/// Where the certificate (chain) and its key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What was loaded, for the log.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub not_after: OffsetDateTime,
    pub public_key_sha256: String,
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "valid until {}, key sha256 {}",
            self.not_after.date(),
            self.public_key_sha256
        )
    }
}

/// The certificate in force, replaceable while connections use it.
#[derive(Debug)]
pub struct ReloadableCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl ReloadableCert {
    /// Loads and checks `files` (at `now`); `allow_group_read` as for the server's other
    /// secret files.
    pub fn load(
        files: TlsFiles,
        now: OffsetDateTime,
        allow_group_read: bool,
    ) -> Result<(Self, Loaded), String> {
        let (key, loaded) = load_pair(&files, now, allow_group_read)?;
        Ok((
            ReloadableCert {
                files,
                current: RwLock::new(key),
            },
            loaded,
        ))
    }

    /// Reads the files again; on any problem the pair in force stays.
    pub fn reload(&self, now: OffsetDateTime, allow_group_read: bool) -> Result<Loaded, String> {
        let (key, loaded) = load_pair(&self.files, now, allow_group_read)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(loaded)
    }

    /// The certificate (chain) and key in force.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The rustls configuration serving this certificate: TLS 1.3 and 1.2, HTTP/2 and
    /// HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(crate::PROTOCOLS)
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
}

fn load_pair(
    files: &TlsFiles,
    now: OffsetDateTime,
    allow_group_read: bool,
) -> Result<(Arc<CertifiedKey>, Loaded), String> {
    let (cert_path, key_path) = (files.cert.display(), files.key.display());
    let cert_pem = read(&files.cert, "certificate")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the TLS certificate {cert_path} is not valid PEM: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "the TLS certificate {cert_path} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
        ));
    };
    private_key_file(&files.key, allow_group_read)?;
    let key_pem = read(&files.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "the TLS key {key_path} holds no private key (expected PEM: -----BEGIN PRIVATE KEY-----)"
        ),
        other => format!("the TLS key {key_path} is not valid PEM: {other}"),
    })?;
    let signing = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the TLS key {key_path} cannot be used: {e}"))?;
    let validity =
        crate::x509::validity(leaf).map_err(|e| format!("the TLS certificate {cert_path}: {e}"))?;
    if now > validity.not_after {
        return Err(format!(
            "the TLS certificate {cert_path} expired on {}: renew it (appfence tls init makes a lab one)",
            validity.not_after
        ));
    }
    if now < validity.not_before {
        return Err(format!(
            "the TLS certificate {cert_path} is not valid before {}: check this host's clock",
            validity.not_before
        ));
    }
    let public_key_sha256 = crate::x509::public_key_sha256(leaf)
        .map_err(|e| format!("the TLS certificate {cert_path}: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        format!("the TLS key {key_path} does not match the certificate {cert_path}")
    })?;
    Ok((
        Arc::new(certified),
        Loaded {
            not_after: validity.not_after,
            public_key_sha256,
        },
    ))
}

/// A private key that others can read is refused, like the server's other secrets.
fn private_key_file(path: &Path, allow_group_read: bool) -> Result<(), String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the TLS key {}: {e}", path.display()))?;
    appfence_core::private_files::check_mode(path, meta.mode(), false, allow_group_read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Pair {
        _dir: tempfile::TempDir,
        files: TlsFiles,
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn pair(not_after: (i32, u8, u8)) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).unwrap();
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", &cert.pem(), 0o644),
            key: write(dir.path(), "key.pem", &key.serialize_pem(), 0o600),
        };
        Pair { _dir: dir, files }
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-12-07 12:00 UTC)
    }

    #[test]
    fn a_good_pair_loads_and_reloads() {
        let p = pair((2040, 1, 1));
        let (cert, loaded) = ReloadableCert::load(p.files.clone(), now(), false).unwrap();
        assert_eq!(loaded.not_after.date().to_string(), "2040-01-01");
        let first = cert.current.read().unwrap().clone();
        // A new pair in the same files: swapped.
        let q = pair((2041, 1, 1));
        std::fs::copy(&q.files.cert, &p.files.cert).unwrap();
        std::fs::copy(&q.files.key, &p.files.key).unwrap();
        let reloaded = cert.reload(now(), false).unwrap();
        assert_eq!(reloaded.not_after.date().to_string(), "2041-01-01");
        assert!(!Arc::ptr_eq(&first, &cert.current.read().unwrap()));
    }

    #[test]
    fn a_bad_new_pair_is_refused_and_the_old_one_stays() {
        let p = pair((2040, 1, 1));
        let (cert, _) = ReloadableCert::load(p.files.clone(), now(), false).unwrap();
        let before = cert.current.read().unwrap().clone();
        // Another key: does not match the certificate.
        let q = pair((2040, 1, 1));
        std::fs::copy(&q.files.key, &p.files.key).unwrap();
        let e = cert.reload(now(), false).unwrap_err();
        assert!(e.contains("does not match the certificate"), "{e}");
        assert!(Arc::ptr_eq(&before, &cert.current.read().unwrap()));
    }

    #[test]
    fn every_bad_input_is_a_clear_error() {
        let p = pair((2025, 1, 1));
        let e = ReloadableCert::load(p.files.clone(), now(), false).unwrap_err();
        assert!(
            e.contains("expired on 2025-01-01") && e.contains("cert.pem"),
            "{e}"
        );

        let p = pair((2040, 1, 1));
        let early = time::macros::datetime!(2019-06-01 0:00 UTC);
        let e = ReloadableCert::load(p.files.clone(), early, false).unwrap_err();
        assert!(e.contains("not valid before"), "{e}");

        let missing = TlsFiles {
            cert: p.files.cert.with_file_name("nope.pem"),
            key: p.files.key.clone(),
        };
        let e = ReloadableCert::load(missing, now(), false).unwrap_err();
        assert!(
            e.contains("cannot read the TLS certificate") && e.contains("nope.pem"),
            "{e}"
        );

        let swapped = TlsFiles {
            cert: p.files.key.clone(),
            key: p.files.cert.clone(),
        };
        let e = ReloadableCert::load(swapped, now(), false).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");

        let dir = p.files.cert.parent().unwrap();
        let no_key = TlsFiles {
            cert: p.files.cert.clone(),
            key: write(dir, "empty.pem", "hello\n", 0o600),
        };
        let e = ReloadableCert::load(no_key, now(), false).unwrap_err();
        assert!(
            e.contains("holds no private key") && e.contains("empty.pem"),
            "{e}"
        );

        std::fs::set_permissions(&p.files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ReloadableCert::load(p.files.clone(), now(), false).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(
            ReloadableCert::load(p.files.clone(), now(), true).is_err(),
            "others may never read it"
        );
        std::fs::set_permissions(&p.files.key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(ReloadableCert::load(p.files.clone(), now(), true).is_ok());
    }
}
