//! The device's persisted state, in its state directory:
//!
//! - `credential.json`: who the device is (machine id, credential, server URL); mode 0600
//!   because the credential is a secret.
//! - `enrollment_key.json`: the device's enrolment key (0600), created before its first
//!   enrolment request and kept afterwards. Enrolling again with it gets a new
//!   credential for the same machine, so a lost answer or credential file does not
//!   lock the device out.
//! - `enforcement.json`: what the device enforces. It is written (and fsynced) *before*
//!   a success is reported, so a restart re-applies exactly what the server was told.
//! - `allowlist.json`: the server's allowlist in force (0600), re-applied at start with
//!   the restriction, before the server is reachable.
//! - `alive.json`: when the agent was last seen alive while restricted. At the next start
//!   the gap from it to the re-apply is time the device spent unprotected.
//! - `memfd_noexec.saved`: the `vm.memfd_noexec` value to restore, kept by the fanotify
//!   enforcer while restricted.
//! - `offboarding.json`: an offboard action is under way (written before the enforcement
//!   is lifted for it): a credential refused from then on means the server completed
//!   the offboarding, not that something is wrong.
//! - `offboarded.json`: the device was offboarded. Everything above is deleted (the
//!   credential first); this record stays, holds no secret, and keeps the agent from
//!   starting (or enrolling) again until someone removes it.
//!
//! Every file is written atomically (a temporary file of its own, fsync, rename, fsync of
//! the directory), so a crash leaves either the old or the new content, never a torn
//! file; writers of the same file (the keep-alive stamp and the apply path both write
//! `alive.json`) take turns, so the last completed write wins and none fails because of
//! another. A file that cannot be parsed anyway is reported as [`StateError::Corrupt`],
//! never a panic.
//!
//! These functions block (fsync); async callers run them on the blocking pool.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use appfence_proto::agent::{AllowlistResponse, EnforcementMode, EnforcementState};
use appfence_proto::Timestamp;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const CREDENTIAL_FILE: &str = "credential.json";
pub const ENROLLMENT_KEY_FILE: &str = "enrollment_key.json";
pub const ENFORCEMENT_FILE: &str = "enforcement.json";
pub const ALLOWLIST_FILE: &str = "allowlist.json";
pub const ALIVE_FILE: &str = "alive.json";
pub const MEMFD_SAVED_FILE: &str = "memfd_noexec.saved";
pub const OFFBOARDING_FILE: &str = "offboarding.json";
pub const OFFBOARDED_FILE: &str = "offboarded.json";
/// Only the owner may read the credential.
const SECRET_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
/// Random bytes in an enrolment key: as many as in a credential.
const ENROLLMENT_KEY_BYTES: usize = 32;

/// The device's identity, as returned by enrolment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCredential {
    /// The server the device enrolled with.
    pub server_url: String,
    /// The host name the device enrolled under.
    pub hostname: String,
    pub machine_id: String,
    pub aad_device_id: String,
    /// The bearer credential: secret.
    pub credential: String,
    pub enrolled_at: Timestamp,
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredential")
            .field("server_url", &self.server_url)
            .field("hostname", &self.hostname)
            .field("machine_id", &self.machine_id)
            .field("aad_device_id", &self.aad_device_id)
            .field("credential", &"<redacted>")
            .field("enrolled_at", &self.enrolled_at)
            .finish()
    }
}

/// An offboard action under way (`offboarding.json`), or done (`offboarded.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffboardRecord {
    /// The offboard action.
    pub action_id: String,
    pub machine_id: String,
    pub hostname: String,
    pub server_url: String,
    /// When the agent took the action on (`offboarding.json`), or finished it
    /// (`offboarded.json`).
    pub at: Timestamp,
    /// How it ended, for `offboarded.json`: `Succeeded`, `Failed`, or what the server
    /// said (a refused credential: `CredentialRefused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// The device's enrolment key: a secret of its own that lets it enrol again as the same
/// machine.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentKey {
    /// 32 random bytes, URL-safe base64 without padding.
    pub key: String,
}

impl EnrollmentKey {
    /// A fresh key from the OS's random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; ENROLLMENT_KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        EnrollmentKey {
            key: URL_SAFE_NO_PAD.encode(bytes),
        }
    }
}

impl fmt::Debug for EnrollmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnrollmentKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is corrupt ({reason}); move it away to start over", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The state directory is reachable by other users: refused, with the fix.
    #[error("{0}")]
    NotPrivate(String),
}

/// The state directory of one device.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
    /// The last write's failure (`path`, error), cleared by the next write that works:
    /// reported to the server so that a full disk on the device is seen.
    write_fault: Arc<Mutex<Option<(PathBuf, String)>>>,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir {
            root: root.into(),
            write_fault: Arc::default(),
        }
    }

    /// Why the last write failed, if it did: `(path, error)`.
    pub fn write_fault(&self) -> Option<(PathBuf, String)> {
        self.write_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// [`write_json`], remembering its outcome.
    fn write<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StateError> {
        let outcome = write_json(path, value);
        let mut fault = self.write_fault.lock().unwrap_or_else(|e| e.into_inner());
        *fault = match &outcome {
            Ok(()) => None,
            Err(StateError::Io { source, .. }) => Some((path.to_path_buf(), source.to_string())),
            Err(other) => Some((path.to_path_buf(), other.to_string())),
        };
        outcome
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn credential_path(&self) -> PathBuf {
        self.root.join(CREDENTIAL_FILE)
    }

    pub fn enrollment_key_path(&self) -> PathBuf {
        self.root.join(ENROLLMENT_KEY_FILE)
    }

    pub fn enforcement_path(&self) -> PathBuf {
        self.root.join(ENFORCEMENT_FILE)
    }

    pub fn allowlist_path(&self) -> PathBuf {
        self.root.join(ALLOWLIST_FILE)
    }

    pub fn alive_path(&self) -> PathBuf {
        self.root.join(ALIVE_FILE)
    }

    /// Where the fanotify enforcer keeps the `vm.memfd_noexec` value to restore.
    pub fn memfd_saved_path(&self) -> PathBuf {
        self.root.join(MEMFD_SAVED_FILE)
    }

    pub fn offboarding_path(&self) -> PathBuf {
        self.root.join(OFFBOARDING_FILE)
    }

    pub fn offboarded_path(&self) -> PathBuf {
        self.root.join(OFFBOARDED_FILE)
    }

    /// The offboard action under way, if any.
    pub fn load_offboarding(&self) -> Result<Option<OffboardRecord>, StateError> {
        read_json(&self.offboarding_path())
    }

    /// Records (durably) that an offboard action is under way.
    pub fn save_offboarding(&self, record: &OffboardRecord) -> Result<(), StateError> {
        self.write(&self.offboarding_path(), record)
    }

    /// Forgets an offboard action that will not happen (it was cancelled).
    pub fn clear_offboarding(&self) -> Result<(), StateError> {
        remove_file(&self.offboarding_path())
    }

    /// The record of this device's offboarding, if it was offboarded.
    pub fn load_offboarded(&self) -> Result<Option<OffboardRecord>, StateError> {
        read_json(&self.offboarded_path())
    }

    /// The end of the device: records that it was offboarded (durably, first, so that
    /// a crash part-way never lets the agent enrol again), then deletes the credential
    /// (overwritten before it is unlinked), the enrolment key, the enforcement record,
    /// the allowlist, the alive stamp and the offboarding record. Every file is tried;
    /// the first failure is returned.
    pub fn finish_offboarding(&self, record: &OffboardRecord) -> Result<(), StateError> {
        self.write(&self.offboarded_path(), record)?;
        let mut first_error = shred(&self.credential_path()).err();
        for path in [
            self.enrollment_key_path(),
            self.enforcement_path(),
            self.allowlist_path(),
            self.alive_path(),
            self.offboarding_path(),
        ] {
            if let Err(e) = remove_file(&path) {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = File::open(&self.root).and_then(|d| d.sync_all()) {
            first_error.get_or_insert(StateError::Io {
                op: "sync",
                path: self.root.clone(),
                source: e,
            });
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Creates the directory (and its parents) if needed, private to the owner; refuses
    /// one that other users can reach (it holds the device's credential), naming the
    /// `chmod` that fixes it.
    pub fn create(&self) -> Result<(), StateError> {
        let io_err = |op, source| StateError::Io {
            op,
            path: self.root.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.root)
            .map_err(|e| io_err("create", e))?;
        let meta = fs::metadata(&self.root).map_err(|e| io_err("inspect", e))?;
        appfence_core::private_files::check_mode(
            &self.root,
            meta.permissions().mode(),
            true,
            false,
        )
        .map_err(StateError::NotPrivate)?;
        self.remove_leftover_temp_files();
        Ok(())
    }

    /// Temporary files a crash left mid-write (`.NAME.*.tmp`): at start, before anything
    /// writes, they are only litter.
    fn remove_leftover_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The stored credential; `None` if the device never enrolled here.
    pub fn load_credential(&self) -> Result<Option<StoredCredential>, StateError> {
        let path = self.credential_path();
        let cred: Option<StoredCredential> = read_json(&path)?;
        if let Some(c) = &cred {
            if c.credential.is_empty() || c.machine_id.is_empty() {
                return Err(StateError::Corrupt {
                    path,
                    reason: "empty credential or machine id".into(),
                });
            }
            tighten_permissions(&path)?;
        }
        Ok(cred)
    }

    pub fn save_credential(&self, cred: &StoredCredential) -> Result<(), StateError> {
        self.write(&self.credential_path(), cred)
    }

    /// The enrolment key; `None` if the device never tried to enrol here.
    pub fn load_enrollment_key(&self) -> Result<Option<EnrollmentKey>, StateError> {
        let path = self.enrollment_key_path();
        let key: Option<EnrollmentKey> = read_json(&path)?;
        if let Some(k) = &key {
            if k.key.is_empty() {
                return Err(StateError::Corrupt {
                    path,
                    reason: "empty enrolment key".into(),
                });
            }
            tighten_permissions(&path)?;
        }
        Ok(key)
    }

    /// The enrolment key, created and saved durably first if there is none, so that
    /// whatever happens to the enrolment request the key it carried is on disk.
    pub fn enrollment_key(&self) -> Result<EnrollmentKey, StateError> {
        if let Some(key) = self.load_enrollment_key()? {
            return Ok(key);
        }
        let key = EnrollmentKey::generate();
        self.write(&self.enrollment_key_path(), &key)?;
        Ok(key)
    }

    /// The enforcement state last applied; `None` if there is none yet.
    pub fn load_enforcement(&self) -> Result<Option<EnforcementState>, StateError> {
        read_json(&self.enforcement_path())
    }

    /// Records the enforcement state durably: when this returns, it survives a power cut.
    pub fn save_enforcement(&self, state: &EnforcementState) -> Result<(), StateError> {
        self.write(&self.enforcement_path(), state)
    }

    /// What can still be read from an enforcement record that does not parse as a
    /// whole: `restricted` and `mode`, if the file is a JSON object
    /// with a boolean `restricted`. A device must not lose its restriction to a field
    /// damaged elsewhere in the record.
    pub fn salvage_enforcement(&self) -> Option<EnforcementState> {
        let bytes = fs::read(self.enforcement_path()).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let restricted = value.get("restricted")?.as_bool()?;
        let mode = value
            .get("mode")
            .and_then(|m| serde_json::from_value::<EnforcementMode>(m.clone()).ok())
            .unwrap_or_default();
        Some(EnforcementState {
            restricted,
            mode,
            ..EnforcementState::default()
        })
    }

    /// The allowlist last applied; `None` if there is none yet.
    pub fn load_allowlist(&self) -> Result<Option<AllowlistResponse>, StateError> {
        read_json(&self.allowlist_path())
    }

    pub fn save_allowlist(&self, allowlist: &AllowlistResponse) -> Result<(), StateError> {
        self.write(&self.allowlist_path(), allowlist)
    }

    /// When the agent was last alive while restricted; `None` if never recorded.
    pub fn load_alive(&self) -> Result<Option<Timestamp>, StateError> {
        Ok(read_json::<AliveStamp>(&self.alive_path())?.map(|s| s.restricted_at))
    }

    /// Records (durably) that the agent is alive and restricted at `now`.
    pub fn save_alive(&self, now: Timestamp) -> Result<(), StateError> {
        self.write(&self.alive_path(), &AliveStamp { restricted_at: now })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AliveStamp {
    restricted_at: Timestamp,
}

/// Locks of the files being written, one per path, so writers of the same file take
/// turns. Entries are few (a handful of files per device) and kept.
static WRITE_LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> =
    LazyLock::new(Default::default);

fn write_lock(path: &Path) -> Arc<Mutex<()>> {
    WRITE_LOCKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(path.to_path_buf())
        .or_default()
        .clone()
}

/// Replaces `path` with `bytes` atomically and durably, the file getting `mode`. Each
/// write goes through a temporary file of its own (created with `O_EXCL`, with `mode`
/// from the start), and writers of the same path in this process are serialised.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    #[cfg(test)]
    if failing_writes::fails(path) {
        return Err(io::Error::other("injected write failure (test)"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let lock = write_lock(path);
    let _turn = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // On failure the temporary file is removed when `tmp` is dropped.
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename itself is durable only once the directory is synced.
    File::open(dir)?.sync_all()
}

/// Tests make writes of a given path fail, as a full disk would, while reads work.
#[cfg(test)]
pub(crate) mod failing_writes {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(crate) fn fail(path: &Path) {
        PATHS.lock().unwrap().push(path.to_path_buf());
    }

    pub(crate) fn heal(path: &Path) {
        PATHS.lock().unwrap().retain(|p| p != path);
    }

    pub(super) fn fails(path: &Path) -> bool {
        PATHS.lock().unwrap().iter().any(|p| p == path)
    }
}

/// Deletes `path`; one that does not exist is fine.
fn remove_file(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            op: "delete",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Overwrites a secret file with zeros (and syncs it) before deleting it, so that its
/// content is not left in the file's blocks; best effort on filesystems that write
/// elsewhere (copy-on-write, journalled data).
fn shred(path: &Path) -> Result<(), StateError> {
    if let Ok(meta) = fs::metadata(path) {
        let zeros = vec![0u8; meta.len() as usize];
        let overwritten = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| {
                f.write_all(&zeros)?;
                f.sync_all()
            });
        if let Err(e) = overwritten {
            tracing::warn!(path = %path.display(), error = %e, "cannot overwrite the file before deleting it");
        }
    }
    remove_file(path)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Io {
        op: "serialise",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, SECRET_MODE).map_err(|source| StateError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// A secret readable by others was copied or restored carelessly: fix it, say so.
fn tighten_permissions(path: &Path) -> Result<(), StateError> {
    let io_err = |op, source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mode = fs::metadata(path)
        .map_err(|e| io_err("inspect", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "secret file was readable by others; restricting it to 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(SECRET_MODE))
            .map_err(|e| io_err("chmod", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> StoredCredential {
        StoredCredential {
            server_url: "http://127.0.0.1:8080".into(),
            hostname: "demo-linux-01.appfence.local".into(),
            machine_id: "1e5bc9d7e413ddd7902c2932e418702b84d0cc07".into(),
            aad_device_id: "80fe8ff8-2624-418e-9591-41f0491218f9".into(),
            credential: "dev_secret".into(),
            enrolled_at: Timestamp::from_unix_seconds(1_700_000_000),
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_state_directory_others_can_reach_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let dir = StateDir::new(&root);
        dir.create().unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let err = dir.create().unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod 700 '{}'", root.display())),
            "{err}"
        );
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        dir.create().unwrap();
    }

    #[test]
    fn finishing_an_offboarding_leaves_only_its_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("dev"));
        dir.create().unwrap();
        dir.save_credential(&credential()).unwrap();
        dir.enrollment_key().unwrap();
        dir.save_enforcement(&EnforcementState {
            restricted: true,
            ..EnforcementState::default()
        })
        .unwrap();
        dir.save_allowlist(&AllowlistResponse {
            version: 3,
            sha256: vec![],
            ..AllowlistResponse::default()
        })
        .unwrap();
        dir.save_alive(Timestamp::from_unix_seconds(5)).unwrap();
        let record = OffboardRecord {
            action_id: "947a677a-a11a-4240-ab6e-91277e2386b9".into(),
            machine_id: credential().machine_id,
            hostname: credential().hostname,
            server_url: credential().server_url,
            at: Timestamp::from_unix_seconds(6),
            outcome: None,
        };
        assert_eq!(dir.load_offboarding().unwrap(), None);
        dir.save_offboarding(&record).unwrap();
        assert_eq!(dir.load_offboarding().unwrap(), Some(record.clone()));
        dir.clear_offboarding().unwrap();
        dir.clear_offboarding().unwrap();
        assert_eq!(dir.load_offboarding().unwrap(), None);
        dir.save_offboarding(&record).unwrap();

        let done = OffboardRecord {
            outcome: Some("Succeeded".into()),
            ..record
        };
        dir.finish_offboarding(&done).unwrap();
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![OFFBOARDED_FILE.to_string()]);
        assert_eq!(dir.load_offboarded().unwrap(), Some(done.clone()));
        assert_eq!(dir.load_credential().unwrap(), None);
        let text = fs::read_to_string(dir.offboarded_path()).unwrap();
        assert!(!text.contains("dev_secret"), "{text}");
        // Again (a crash part-way, then a restart): nothing left to delete is fine.
        dir.finish_offboarding(&done).unwrap();
    }

    #[test]
    fn credential_round_trips_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("nested/dev"));
        dir.create().unwrap();
        assert_eq!(mode_of(dir.path()), 0o700);
        assert_eq!(dir.load_credential().unwrap(), None);
        dir.save_credential(&credential()).unwrap();
        assert_eq!(dir.load_credential().unwrap(), Some(credential()));
        assert_eq!(mode_of(&dir.credential_path()), 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CREDENTIAL_FILE)]);
    }

    #[test]
    fn enforcement_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        assert_eq!(dir.load_enforcement().unwrap(), None);
        let s = EnforcementState {
            restricted: true,
            since: Some(Timestamp::from_ticks(17_000_000_000_123_456)),
            applied_action_id: Some("a1".into()),
            ..EnforcementState::default()
        };
        dir.save_enforcement(&s).unwrap();
        assert_eq!(dir.load_enforcement().unwrap(), Some(s.clone()));
        let off = EnforcementState::default();
        dir.save_enforcement(&off).unwrap();
        assert_eq!(dir.load_enforcement().unwrap(), Some(off));
    }

    /// Names in `dir` that look like temporary files of `write_atomic`.
    fn temp_files(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.json");
        write_atomic(&path, b"first", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(mode_of(&path), 0o600);
        write_atomic(&path, b"2", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"2");
        assert!(temp_files(tmp.path()).is_empty());
    }

    #[test]
    fn leftover_temp_files_of_a_crash_are_removed_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let dir = StateDir::new(&root);
        dir.create().unwrap();
        // What a crash mid-write leaves: the old fixed name and the new unique one.
        fs::write(root.join(".alive.json.tmp"), vec![b'z'; 100]).unwrap();
        fs::write(root.join(".alive.json.Ab3dE.tmp"), b"partial").unwrap();
        fs::write(root.join("alive.json"), b"{}").unwrap();
        dir.create().unwrap();
        assert!(temp_files(&root).is_empty());
        assert!(root.join("alive.json").exists(), "only temporary files go");
    }

    #[test]
    fn failed_atomic_write_keeps_the_old_content_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        // Renaming onto a non-empty directory fails after the temp file was written
        // (the one failure root cannot bypass).
        let target = tmp.path().join("blocked");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"old").unwrap();
        assert!(write_atomic(&target, b"new", 0o600).is_err());
        assert!(temp_files(tmp.path()).is_empty());
        assert_eq!(fs::read(target.join("x")).unwrap(), b"old");
    }

    /// Many writers of one file at once, threads and async tasks (as the keep-alive
    /// stamp and the apply path are): no write fails, every read in between parses,
    /// and the file ends with one of the written values.
    #[test]
    fn concurrent_writers_of_one_file_never_fail_or_tear() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let dir = StateDir::new(&root);
        dir.create().unwrap();
        let written = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // Absent only before the first write; never torn.
                    dir.load_alive().expect("every read parses");
                    reads += 1;
                }
                reads
            })
        };
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (dir, written) = (dir.clone(), written.clone());
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let at = Timestamp::from_unix_seconds(1_700_000_000 + t * 1000 + i);
                        written.lock().unwrap().insert(at);
                        dir.save_alive(at).expect("no write fails");
                    }
                })
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let (dir, written) = (dir.clone(), written.clone());
                    tokio::task::spawn_blocking(move || {
                        for i in 0..100 {
                            let at = Timestamp::from_unix_seconds(1_800_000_000 + t * 1000 + i);
                            written.lock().unwrap().insert(at);
                            dir.save_alive(at).expect("no write fails");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        for t in threads {
            t.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0);
        let last = dir.load_alive().unwrap().expect("written");
        assert!(written.lock().unwrap().contains(&last));
        assert!(temp_files(&root).is_empty());
    }

    #[test]
    fn corrupt_files_are_reported_not_panicked_on() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        fs::write(dir.credential_path(), b"{\"serverUrl\": tru").unwrap();
        let err = dir.load_credential().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(CREDENTIAL_FILE));

        fs::write(dir.enforcement_path(), b"").unwrap();
        assert!(matches!(
            dir.load_enforcement(),
            Err(StateError::Corrupt { .. })
        ));

        // Well-formed JSON without a usable credential is corrupt too.
        let mut c = credential();
        c.credential.clear();
        dir.save_credential(&c).unwrap();
        assert!(matches!(
            dir.load_credential(),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn loose_credential_permissions_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        dir.save_credential(&credential()).unwrap();
        fs::set_permissions(dir.credential_path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(dir.load_credential().unwrap().is_some());
        assert_eq!(mode_of(&dir.credential_path()), 0o600);
    }

    #[test]
    fn allowlist_and_alive_stamp_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        assert_eq!(dir.load_allowlist().unwrap(), None);
        assert_eq!(dir.load_alive().unwrap(), None);
        let list = AllowlistResponse {
            version: 3,
            sha256: vec!["ab".repeat(32)],
            ..AllowlistResponse::default()
        };
        dir.save_allowlist(&list).unwrap();
        assert_eq!(dir.load_allowlist().unwrap(), Some(list));
        assert_eq!(mode_of(&dir.allowlist_path()), 0o600);
        let t = Timestamp::from_unix_seconds(1_700_000_123);
        dir.save_alive(t).unwrap();
        assert_eq!(dir.load_alive().unwrap(), Some(t));
        fs::write(dir.alive_path(), b"nonsense").unwrap();
        assert!(matches!(dir.load_alive(), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn a_damaged_record_still_says_whether_the_device_was_restricted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        assert_eq!(dir.salvage_enforcement(), None);
        fs::write(
            dir.enforcement_path(),
            br#"{"restricted": true, "mode": "monitor", "since": "not a time"}"#,
        )
        .unwrap();
        assert!(dir.load_enforcement().is_err());
        let salvaged = dir.salvage_enforcement().unwrap();
        assert!(salvaged.restricted);
        assert_eq!(salvaged.mode, EnforcementMode::Monitor);
        fs::write(dir.enforcement_path(), b"{\"restri").unwrap();
        assert_eq!(dir.salvage_enforcement(), None);
    }

    #[test]
    fn debug_output_hides_the_credential() {
        assert!(!format!("{:?}", credential()).contains("dev_secret"));
        let key = EnrollmentKey::generate();
        assert!(!format!("{key:?}").contains(&key.key));
    }

    #[test]
    fn the_enrollment_key_is_created_once_private_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        assert_eq!(dir.load_enrollment_key().unwrap(), None);
        let key = dir.enrollment_key().unwrap();
        // 32 random bytes, base64url without padding.
        assert_eq!(key.key.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&key.key).unwrap().len(), 32);
        assert_eq!(mode_of(&dir.enrollment_key_path()), 0o600);
        assert_eq!(
            dir.enrollment_key().unwrap(),
            key,
            "loaded, not regenerated"
        );
        assert_eq!(dir.load_enrollment_key().unwrap(), Some(key.clone()));
        assert_ne!(EnrollmentKey::generate(), key);

        fs::set_permissions(dir.enrollment_key_path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(dir.load_enrollment_key().unwrap(), Some(key));
        assert_eq!(mode_of(&dir.enrollment_key_path()), 0o600);

        // A damaged key is reported, never silently replaced by another.
        fs::write(dir.enrollment_key_path(), b"{\"key\": \"\"}").unwrap();
        assert!(matches!(
            dir.enrollment_key(),
            Err(StateError::Corrupt { .. })
        ));
    }
}
