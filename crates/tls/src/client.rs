//! How the agent and the CLI talk to a server: which URLs they accept, which
//! certificates they trust, and what they say when a certificate is refused.
//!
//! - `https://` is verified against the system's roots, or against the CA certificates
//!   of `--ca-file` alone (then nothing else is trusted), and optionally the server's
//!   public key must match a pinned SHA-256 (`--server-key-sha256`, as printed by
//!   `appfence tls init`), checked on top of the chain.
//! - `http://` is accepted only to a loopback address, unless `--insecure-http`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The client side's TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// Trust only the CA certificates in this PEM file.
    pub ca_file: Option<PathBuf>,
    /// The server's public key must have this SHA-256 (hex).
    pub server_key_sha256: Option<String>,
    /// Accept `http://` to addresses other than loopback.
    pub insecure_http: bool,
}

/// `sha256` as 64 lower-case hex digits (colons and case ignored), or why not.
pub fn parse_key_pin(sha256: &str) -> Result<String, String> {
    let hex: String = sha256
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "{sha256:?} is not a SHA-256 in hex (64 digits, as `appfence tls init` prints it)"
        ))
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl ClientTls {
    /// Whether a server at `scheme://host` may be used.
    pub fn check_url(&self, scheme: &str, host: &str) -> Result<(), String> {
        match scheme {
            "https" => Ok(()),
            "http" if self.insecure_http || is_loopback(host) => Ok(()),
            "http" => Err(format!(
                "refusing plain http:// to {host}, which is not a loopback address: \
                 credentials and commands would cross the network in clear text. Use \
                 https:// (with --ca-file for a private CA), or --insecure-http"
            )),
            other => Err(format!(
                "the scheme must be https (or http on loopback), not {other}"
            )),
        }
    }

    /// Whether the server at `url` may be used (see [`ClientTls::check_url`]).
    pub fn check_server_url(&self, url: &str) -> Result<(), String> {
        let parsed =
            url::Url::parse(url).map_err(|e| format!("invalid server URL {url:?}: {e}"))?;
        self.check_url(parsed.scheme(), parsed.host_str().unwrap_or(""))
            .map_err(|e| format!("server URL {url}: {e}"))
    }

    /// The rustls configuration: roots, pin, TLS 1.3/1.2, HTTP/2 and HTTP/1.1.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, String> {
        let roots = self.roots()?;
        let provider = crate::provider();
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("cannot verify servers with these CA certificates: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &self.server_key_sha256 {
            Some(pin) => Arc::new(Pinned {
                chain: webpki,
                sha256: parse_key_pin(pin)?,
                signatures: Signatures::of(&provider),
            }),
            None => webpki,
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(crate::PROTOCOLS)
            .map_err(|e| format!("TLS configuration: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| {
                        format!("the CA file {} is not valid PEM: {e}", path.display())
                    })?;
                    roots.add(cert).map_err(|e| {
                        format!(
                            "the CA file {} holds an unusable certificate: {e}",
                            path.display()
                        )
                    })?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "the CA file {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
                        path.display()
                    ));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "this system has no trusted CA certificates (install ca-certificates), \
                         or give --ca-file with the server's CA"
                            .into(),
                    );
                }
            }
        }
        Ok(roots)
    }
}

/// The chain must verify, and the server's key must be the pinned one.
#[derive(Debug)]
struct Pinned {
    chain: Arc<rustls::client::WebPkiServerVerifier>,
    sha256: String,
    signatures: Signatures,
}

/// The handshake-signature checks both verifiers share (the provider's algorithms).
#[derive(Debug)]
struct Signatures(rustls::crypto::WebPkiSupportedAlgorithms);

impl Signatures {
    fn of(provider: &rustls::crypto::CryptoProvider) -> Self {
        Signatures(provider.signature_verification_algorithms)
    }
}

/// The three signature methods of `ServerCertVerifier`, answered by `self.signatures`.
macro_rules! signatures_from_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.signatures.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.signatures.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.signatures.0.supported_schemes()
        }
    };
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.chain
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let got = crate::x509::public_key_sha256(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if got != self.sha256 {
            return Err(rustls::Error::General(format!(
                "the server's key (sha256 {got}) is not the pinned one ({}): another server, \
                 or a new key (then update --server-key-sha256)",
                self.sha256
            )));
        }
        Ok(verified)
    }

    signatures_from_provider!();
}

/// For clients inside the server's own process (the demo's simulated devices): trust
/// exactly the certificate the server presents now, whatever names it holds.
pub fn own_server_config(cert: Arc<crate::server::ReloadableCert>) -> rustls::ClientConfig {
    let provider = crate::provider();
    let verifier = Arc::new(OwnServer {
        cert,
        signatures: Signatures::of(&provider),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(crate::PROTOCOLS)
        .expect("the ring provider supports TLS 1.3 and 1.2")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

#[derive(Debug)]
struct OwnServer {
    cert: Arc<crate::server::ReloadableCert>,
    signatures: Signatures,
}

impl ServerCertVerifier for OwnServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let current = self.cert.current();
        if current
            .end_entity_cert()
            .is_ok_and(|own| own.as_ref() == end_entity.as_ref())
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not this process's own server certificate".into(),
            ))
        }
    }

    signatures_from_provider!();
}

/// A TLS failure somewhere in `err`'s sources, in words a person can act on.
pub fn explain(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = tls_error(e) {
            return Some(words(tls));
        }
        // hyper's words for a TLS answer to a plain HTTP request.
        if e.to_string().contains("invalid HTTP version parsed") {
            return Some(
                "the server did not answer in plain HTTP: is it serving HTTPS there? (then use https://)".into(),
            );
        }
        next = e.source();
    }
    None
}

/// `e` as rustls's error, also inside `io::Error`s (which the handshake wraps it in,
/// sometimes twice, and whose `source()` skips what they wrap).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let mut io = e.downcast_ref::<std::io::Error>()?;
    loop {
        let inner = io.get_ref()?;
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        io = inner.downcast_ref::<std::io::Error>()?;
    }
}

fn words(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired: renew it on the server".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet: check the clocks of this host and the server".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate is for another name: use the name the certificate was \
                 made for in the URL, or make one for this name (appfence tls init --host)"
                    .into()
            }
            CertificateError::UnknownIssuer => {
                "the server's certificate is signed by a CA this host does not trust: give \
                 --ca-file with the CA that signed it"
                    .into()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        E::General(message) => message.clone(),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "the server did not answer in TLS: is it serving plain HTTP there? (then use http://)".into()
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_to_loopback_unless_told() {
        let strict = ClientTls::default();
        assert!(strict.check_url("https", "appfence.example.com").is_ok());
        for host in ["127.0.0.1", "localhost", "[::1]", "127.3.4.5"] {
            assert!(strict.check_url("http", host).is_ok(), "{host}");
        }
        let e = strict.check_url("http", "10.0.0.5").unwrap_err();
        assert!(
            e.contains("not a loopback address") && e.contains("--insecure-http"),
            "{e}"
        );
        assert!(strict.check_url("ftp", "h").is_err());
        let lax = ClientTls {
            insecure_http: true,
            ..ClientTls::default()
        };
        assert!(lax.check_url("http", "10.0.0.5").is_ok());
    }

    #[test]
    fn pins_are_hex_sha256() {
        let pin = "AB:".repeat(31) + "AB";
        assert_eq!(parse_key_pin(&pin).unwrap(), "ab".repeat(32));
        assert!(parse_key_pin("abc").unwrap_err().contains("64 digits"));
        assert!(parse_key_pin(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn a_bad_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let tls = |p: &std::path::Path| ClientTls {
            ca_file: Some(p.to_path_buf()),
            ..ClientTls::default()
        };
        let e = tls(&path).rustls_config().unwrap_err();
        assert!(e.contains("cannot read the CA file"), "{e}");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = tls(&path).rustls_config().unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        let lab =
            crate::lab::generate(&["a.lab".into()], 1, time::OffsetDateTime::now_utc()).unwrap();
        std::fs::write(&path, lab.ca_cert).unwrap();
        assert!(tls(&path).rustls_config().is_ok());
        let pinned = ClientTls {
            server_key_sha256: Some("nope".into()),
            ..tls(&path)
        };
        assert!(pinned
            .rustls_config()
            .unwrap_err()
            .contains("not a SHA-256"));
    }
}
