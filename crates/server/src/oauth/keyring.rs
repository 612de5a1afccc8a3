//! The signing keys in force on this replica, kept current with the store.
//!
//! - At start ([`KeyRing::open`]): the key-encryption key is read, or created for an
//!   empty store; keys that earlier versions stored in plain form are sealed; a key is
//!   added if none can sign.
//! - Every `refresh_interval` (and at most once a second when a token names a key this
//!   replica does not know yet) the keys are re-read, so a rotation or a retirement
//!   made by another replica or by `appfence keys` takes effect everywhere within that
//!   bound.
//! - [`rotate`] and [`retire`] are what `appfence keys`, and the sweeper's scheduled
//!   rotation, do.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use appfence_core::records::{SealedSigningKey, SigningKey};
use appfence_core::signing_keys::{needs_immediate_key, newest_unretired, RotationTiming};
use appfence_core::{Clock, Error};
use appfence_proto::Timestamp;
use appfence_store::Store;

use super::keys::{generate_signing_key, kid_of, seal_seed, KeyMaterial, ALGORITHM};
use crate::at_rest::KeyEncryptionKey;

/// How often a token with an unknown `kid` may make this replica re-read the keys.
const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(1);

pub struct KeyRing {
    kek: KeyEncryptionKey,
    timing: RotationTiming,
    current: RwLock<Arc<KeyMaterial>>,
    last_forced_refresh: Mutex<Option<Timestamp>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("kek", &self.kek)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Prepares the keys of `store` with the key file at `key_file` (see the module
    /// documentation). Errors are sentences for the operator.
    pub async fn open(
        store: &dyn Store,
        clock: &dyn Clock,
        key_file: &Path,
        allow_group_read: bool,
        timing: RotationTiming,
    ) -> Result<KeyRing, String> {
        let keys = store
            .signing_keys()
            .await
            .map_err(|e| format!("cannot read the signing keys: {e}"))?;
        let kek = read_or_create_kek(&keys, key_file, allow_group_read)?;
        seal_plain_keys(store, &kek, &keys, clock.now()).await?;
        let mut keys = store
            .signing_keys()
            .await
            .map_err(|e| format!("cannot read the signing keys: {e}"))?;
        let now = clock.now();
        if needs_immediate_key(&keys, now) {
            if let Some(key) = rotate(store, &kek, &timing, now, true)
                .await
                .map_err(|e| format!("cannot add a signing key: {e}"))?
            {
                tracing::info!(kid = %key.kid, "added a token signing key");
            }
            keys = store
                .signing_keys()
                .await
                .map_err(|e| format!("cannot read the signing keys: {e}"))?;
        }
        let material = KeyMaterial::open(keys, &kek)
            .map_err(|e| format!("cannot open the signing keys: {e}"))?;
        Ok(KeyRing {
            kek,
            timing,
            current: RwLock::new(Arc::new(material)),
            last_forced_refresh: Mutex::new(None),
        })
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<KeyMaterial> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn kek(&self) -> &KeyEncryptionKey {
        &self.kek
    }

    pub fn timing(&self) -> &RotationTiming {
        &self.timing
    }

    /// Re-reads the keys; true if they changed (then cached verifications must go).
    /// On an error the keys in force stay.
    pub async fn refresh(&self, store: &dyn Store) -> Result<bool, Error> {
        let records = store.signing_keys().await?;
        if self.current().records() == records.as_slice() {
            return Ok(false);
        }
        let material = KeyMaterial::open(records, &self.kek)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(material);
        Ok(true)
    }

    /// A token names a key this replica does not know: another replica or
    /// `appfence keys` may have added it. Re-reads the keys at most once a second, so
    /// tokens with made-up key ids cannot make every request a store read. True if the
    /// keys changed.
    pub async fn refresh_for_unknown_kid(
        &self,
        store: &dyn Store,
        now: Timestamp,
    ) -> Result<bool, Error> {
        {
            let mut last = self
                .last_forced_refresh
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| now < at.plus(UNKNOWN_KID_REFRESH)) {
                return Ok(false);
            }
            *last = Some(now);
        }
        self.refresh(store).await
    }
}

/// The key file, or a new one for a store that has never sealed anything.
fn read_or_create_kek(
    keys: &[SigningKey],
    key_file: &Path,
    allow_group_read: bool,
) -> Result<KeyEncryptionKey, String> {
    if let Some(kek) = KeyEncryptionKey::read(key_file, allow_group_read)? {
        return Ok(kek);
    }
    if let Some(sealed) = keys.iter().find(|k| k.kek_id.is_some()) {
        return Err(format!(
            "the key file {} does not exist, but the database holds signing keys sealed with \
             the key-encryption key {}: restore that key file (or point --key-file at it). \
             appfence does not make a new one, which would invalidate every token",
            key_file.display(),
            sealed.kek_id.as_deref().unwrap_or_default()
        ));
    }
    let kek = KeyEncryptionKey::create(key_file)?;
    tracing::info!(path = %key_file.display(), kek_id = %kek.id(), "created the key-encryption key file; back it up apart from the database");
    Ok(kek)
}

/// Seals the private keys an earlier version stored in plain form.
async fn seal_plain_keys(
    store: &dyn Store,
    kek: &KeyEncryptionKey,
    keys: &[SigningKey],
    now: Timestamp,
) -> Result<(), String> {
    let plain = store
        .unsealed_signing_keys()
        .await
        .map_err(|e| format!("cannot read the unsealed signing keys: {e}"))?;
    if plain.is_empty() {
        return Ok(());
    }
    let mut sealed = Vec::with_capacity(plain.len());
    for p in &plain {
        let key = keys.iter().find(|k| k.kid == p.kid).ok_or_else(|| {
            format!(
                "the unsealed signing key {} has no public part in the store",
                p.kid
            )
        })?;
        let seed: [u8; 32] = p
            .private_key
            .as_slice()
            .try_into()
            .map_err(|_| format!("the unsealed signing key {} is not 32 bytes", p.kid))?;
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        if key.algorithm != ALGORITHM
            || public.as_slice() != key.public_key
            || kid_of(&public) != key.kid
        {
            return Err(format!(
                "the unsealed signing key {} does not match its public key",
                p.kid
            ));
        }
        sealed.push(SealedSigningKey {
            kid: p.kid.clone(),
            sealed_private_key: seal_seed(&p.kid, &seed, kek),
            kek_id: kek.id().to_string(),
        });
    }
    store
        .seal_signing_keys(&sealed, now)
        .await
        .map_err(|e| format!("cannot seal the signing keys: {e}"))?;
    for s in &sealed {
        tracing::warn!(
            kid = %s.kid,
            "sealed a signing key that an earlier version stored in plain form; if anyone \
             but appfence could read the data directory or a backup of it, retire that key \
             with `appfence keys retire {}`",
            s.kid
        );
    }
    Ok(())
}

/// Adds a new signing key replacing the newest one: published now and signing from
/// `timing.rotation(now).activates` (or at once with `immediate`). `None` if another
/// rotation (another replica) came first.
pub async fn rotate(
    store: &dyn Store,
    kek: &KeyEncryptionKey,
    timing: &RotationTiming,
    now: Timestamp,
    immediate: bool,
) -> Result<Option<SigningKey>, Error> {
    let keys = store.signing_keys().await?;
    let replacing = newest_unretired(&keys).map(|k| k.kid.clone());
    let plan = if immediate {
        timing.immediate(now)
    } else {
        timing.rotation(now)
    };
    let key = generate_signing_key(kek, now, plan.activates);
    let added = store
        .add_signing_key(&key, replacing.as_deref(), plan.superseded_until)
        .await?;
    Ok(added.then_some(key))
}

/// What retiring a key did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retired {
    /// The key that signs from now on, when the retired key was the signing key.
    pub replacement: Option<SigningKey>,
}

/// Retires `kid` at once (a compromised key: its tokens are refused as soon as each
/// replica re-reads the keys). If it was the key that signs, a replacement that signs
/// at once is added. `None` if there is no such key or it was retired already.
pub async fn retire(
    store: &dyn Store,
    kek: &KeyEncryptionKey,
    timing: &RotationTiming,
    kid: &str,
    now: Timestamp,
    actor: &str,
) -> Result<Option<Retired>, Error> {
    if !store.retire_signing_key(kid, now, actor).await? {
        return Ok(None);
    }
    let keys = store.signing_keys().await?;
    let replacement = if needs_immediate_key(&keys, now) {
        rotate(store, kek, timing, now, true).await?
    } else {
        None
    };
    Ok(Some(Retired { replacement }))
}
