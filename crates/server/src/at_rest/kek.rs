//! The key-encryption key: 256 random bits in a file outside the database (by default
//! `<data dir>/master.key`, or a systemd credential), with which the signing keys are
//! sealed in the store (XChaCha20-Poly1305). A copy of the database without this file
//! signs nothing.
//!
//! The file is created once, `0600`, at the first start on an empty store. It is never
//! re-created silently: a store that holds sealed keys and a missing or different key
//! file is an error at start, because a new key would invalidate every token.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::private_paths::check_private;

/// The file's one line: this prefix, then the key in unpadded base64url.
const FILE_PREFIX: &str = "appfence-kek-v1:";
/// The first byte of every sealed value: the format, so it can change later.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The key-encryption key. Its bytes never leave this type (not even in `Debug`) and
/// are wiped when it is dropped.
pub struct KeyEncryptionKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
    path: PathBuf,
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why a sealed value could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum UnsealError {
    /// Not in a format this version writes.
    Malformed,
    /// Sealed with another key, or changed since.
    Rejected,
}

impl KeyEncryptionKey {
    fn from_bytes(key: [u8; 32], path: &Path) -> Self {
        let id = key_id(&key);
        KeyEncryptionKey {
            key: Zeroizing::new(key),
            id,
            path: path.to_path_buf(),
        }
    }

    /// Reads the key file, refusing one that others (or, without `allow_group_read`,
    /// its group) can read. `Ok(None)` if there is no such file.
    pub fn read(path: &Path, allow_group_read: bool) -> Result<Option<Self>, String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read the key file {}: {e}", path.display())),
        };
        if !meta.is_file() {
            return Err(format!("the key file {} is not a file", path.display()));
        }
        check_private(path, &meta, allow_group_read)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?,
        );
        let encoded = text.trim().strip_prefix(FILE_PREFIX).ok_or_else(|| {
            format!(
                "the key file {} is not an appfence key file (it must start with {FILE_PREFIX})",
                path.display()
            )
        })?;
        let bytes =
            Zeroizing::new(URL_SAFE_NO_PAD.decode(encoded).map_err(|_| {
                format!("the key file {} is damaged (not base64url)", path.display())
            })?);
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "the key file {} is damaged (it must hold 32 bytes)",
                path.display()
            )
        })?;
        Ok(Some(Self::from_bytes(key, path)))
    }

    /// Creates a new key file `0600` (never over an existing one) and syncs it and its
    /// directory, so the key exists on disk before anything is sealed with it.
    pub fn create(path: &Path) -> Result<Self, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let line = Zeroizing::new(format!("{FILE_PREFIX}{}\n", URL_SAFE_NO_PAD.encode(key)));
        let fail =
            |e: std::io::Error| format!("cannot create the key file {}: {e}", path.display());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
        file.write_all(line.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(fail)?;
        }
        Ok(Self::from_bytes(key, path))
    }

    /// A key that lives only in memory (tests of sealing itself).
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self::from_bytes(key, Path::new("<memory>"))
    }

    /// A public name of this key (16 hex characters), stored beside what it sealed, so
    /// that the wrong key file is named as such instead of failing as "damaged".
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals `plaintext` bound to `context` (e.g. the key id of a signing key, so a
    /// sealed value cannot be moved to another row).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message of this size");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`seal`](Self::seal) made with this key and the same `context`.
    pub fn unseal(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != SEALED_V1 {
            return Err(UnsealError::Malformed);
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| UnsealError::Malformed)?;
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| UnsealError::Rejected)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.as_ref().into())
    }
}

/// The public id of a key: a hash that reveals nothing usable about it.
fn key_id(key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"appfence key-encryption key id\0");
    h.update(key);
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let kek = KeyEncryptionKey::ephemeral();
        let sealed = kek.seal(b"kid-1", b"the private key");
        assert_eq!(sealed.len(), 1 + 24 + 15 + 16);
        assert!(
            !sealed.windows(15).any(|w| w == b"the private key"),
            "no plain bytes"
        );
        assert_eq!(
            kek.unseal(b"kid-1", &sealed).unwrap().as_slice(),
            b"the private key"
        );
        assert_eq!(kek.unseal(b"kid-2", &sealed), Err(UnsealError::Rejected));
        let other = KeyEncryptionKey::ephemeral();
        assert_ne!(other.id(), kek.id());
        assert_eq!(other.unseal(b"kid-1", &sealed), Err(UnsealError::Rejected));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(kek.unseal(b"kid-1", &flipped), Err(UnsealError::Rejected));
        assert_eq!(
            kek.unseal(b"kid-1", &sealed[..20]),
            Err(UnsealError::Malformed)
        );
        // Random nonces: the same value seals differently each time.
        assert_ne!(kek.seal(b"k", b"v"), kek.seal(b"k", b"v"));
    }

    #[test]
    fn the_key_file_is_created_private_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        assert!(KeyEncryptionKey::read(&path, false).unwrap().is_none());
        let created = KeyEncryptionKey::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = KeyEncryptionKey::create(&path).unwrap_err();
        assert!(err.contains("exists"), "{err}");
        let read = KeyEncryptionKey::read(&path, false).unwrap().unwrap();
        assert_eq!(read.id(), created.id());
        let sealed = created.seal(b"c", b"secret");
        assert_eq!(read.unseal(b"c", &sealed).unwrap().as_slice(), b"secret");
        assert!(!format!("{read:?}").contains(&URL_SAFE_NO_PAD.encode(*read.key)));
    }

    #[test]
    fn readable_or_damaged_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        KeyEncryptionKey::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyEncryptionKey::read(&path, false).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(KeyEncryptionKey::read(&path, false).is_err());
        assert!(KeyEncryptionKey::read(&path, true).unwrap().is_some());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        for (text, says) in [
            ("hello\n", "not an appfence key file"),
            ("appfence-kek-v1:!!!\n", "not base64url"),
            ("appfence-kek-v1:AAAA\n", "32 bytes"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = KeyEncryptionKey::read(&path, false).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
