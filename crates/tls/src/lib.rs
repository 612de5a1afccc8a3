//! TLS for appfence, both ends, on rustls with the ring provider (the one reqwest's
//! rustls already uses):
//!
//! - [`server`]: the server's certificate and key from PEM files, checked at load (the
//!   key matches, the certificate is valid now, the key file is private) and swapped
//!   on reload without touching open connections.
//! - [`client`]: how the agent and the CLI verify a server (the system's roots or one CA
//!   file, optionally a pinned key) and which `http://` URLs they accept; certificate
//!   errors in words a person can act on.
//! - [`x509`]: the two fields of a certificate that rustls does not expose (validity,
//!   public key).

pub mod client;
pub mod lab;
pub mod server;
pub mod x509;

/// The crypto provider of every TLS configuration here.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2 (rustls supports nothing older).
pub static PROTOCOLS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
