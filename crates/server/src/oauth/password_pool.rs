//! Argon2id, bounded. Human passwords (and client secrets of earlier versions) are
//! checked on a few dedicated threads, one per core, each with its Argon2 memory
//! allocated once at start, behind a short queue. When the queue is full a sign-in is
//! refused at once ([`Busy`]: 429 with `Retry-After`) instead of waiting without bound,
//! so a flood of sign-ins costs at most the pool's CPU and a known amount of memory:
//! `workers × m_cost` KiB (19 MiB each with OWASP's parameters), allocated once and
//! never returned to the allocator to fragment.
//!
//! Parameters: Argon2id, m = 19 MiB, t = 2, p = 1 — OWASP's Password Storage Cheat
//! Sheet's first recommendation, which is also the `argon2` crate's default, so hashes
//! of earlier versions verify with the same memory.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

/// OWASP's Argon2id parameters.
pub const M_COST_KIB: u32 = 19 * 1024;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;
const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;

/// The pool is full: try again shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

enum Work {
    /// Whether the password matches the PHC string (`None`: a dummy, so unknown users
    /// cost the same as wrong passwords).
    Verify(Option<String>),
    Hash,
}

struct Job {
    password: Zeroizing<String>,
    work: Work,
    reply: oneshot::Sender<Outcome>,
}

enum Outcome {
    Verified(bool),
    Hashed(String),
}

/// The pool. Cheap to share (`Arc`); its threads end when it is dropped.
pub struct PasswordPool {
    jobs: SyncSender<Job>,
    workers: usize,
    queue: usize,
}

impl std::fmt::Debug for PasswordPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordPool")
            .field("workers", &self.workers)
            .field("queue", &self.queue)
            .finish()
    }
}

/// A dummy PHC string, made once, for unknown users.
static DUMMY: OnceLock<String> = OnceLock::new();

fn params() -> Params {
    Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN)).expect("OWASP's parameters are valid")
}

impl PasswordPool {
    /// `workers` threads (at least one) and room for `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        let (jobs, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&rx))
                .expect("the Argon2 pool's threads start");
        }
        PasswordPool {
            jobs,
            workers,
            queue,
        }
    }

    /// One worker per core (at most 4: 76 MiB), and a queue of four jobs per worker
    /// (about 0.2 s of waiting at most).
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(4);
        Self::new(cores, cores * 4)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The memory the workers hold, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.workers * M_COST_KIB as usize * 1024
    }

    /// Whether `password` matches the PHC string `phc`; with `None`, checks against a
    /// dummy (the same work) and answers false.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, Busy> {
        match self
            .submit(password, Work::Verify(phc.map(str::to_string)))
            .await?
        {
            Outcome::Verified(ok) => Ok(ok),
            Outcome::Hashed(_) => Ok(false),
        }
    }

    /// The Argon2id PHC string of `password`, with a random salt.
    pub async fn hash(&self, password: &str) -> Result<String, Busy> {
        match self.submit(password, Work::Hash).await? {
            Outcome::Hashed(phc) => Ok(phc),
            Outcome::Verified(_) => Err(Busy),
        }
    }

    async fn submit(&self, password: &str, work: Work) -> Result<Outcome, Busy> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password: Zeroizing::new(password.to_string()),
            work,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Busy),
            Err(TrySendError::Disconnected(_)) => return Err(Busy),
        }
        answer.await.map_err(|_| Busy)
    }
}

/// A worker: its memory once (touched now, so the pool's footprint is part of the
/// server's from the start and never grows), then jobs until the pool is dropped.
fn work(rx: &Mutex<Receiver<Job>>) {
    let mut memory = vec![Block::default(); params().block_count()];
    prefault(&mut memory);
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let outcome = match &job.work {
            Work::Verify(phc) => {
                let dummy;
                let against = match phc {
                    Some(p) => p.as_str(),
                    None => {
                        dummy =
                            DUMMY.get_or_init(|| hash_with(&mut memory, "appfence dummy password"));
                        dummy.as_str()
                    }
                };
                let ok = verify_with(&mut memory, &job.password, against);
                Outcome::Verified(ok && phc.is_some())
            }
            Work::Hash => Outcome::Hashed(hash_with(&mut memory, &job.password)),
        };
        // The caller may have gone (a dropped connection): nothing to do then.
        let _ = job.reply.send(outcome);
    }
}

/// The Argon2id PHC string of `password`, on the calling thread with memory of its own:
/// for offline administration (`user create`), never for the request path.
pub fn hash_once(password: &str) -> String {
    let mut memory = vec![Block::default(); params().block_count()];
    hash_with(&mut memory, password)
}

/// Writes every page of `memory`: a zeroed allocation is only mapped, not resident,
/// until written.
fn prefault(memory: &mut [Block]) {
    let mut noise = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut noise);
    // One Argon2id pass over the whole memory touches every block.
    let _ = Argon2::new(Algorithm::Argon2id, Version::V0x13, params()).fill_memory(
        &noise,
        &noise,
        &mut *memory,
    );
}

fn hash_with(memory: &mut [Block], password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    let mut out = [0u8; OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)
        .expect("hashing with valid parameters and enough memory succeeds");
    format!(
        "$argon2id$v=19$m={M_COST_KIB},t={T_COST},p={P_COST}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    )
}

/// Whether `password` matches `phc`, with the worker's memory. A hash that needs more
/// memory than the worker holds, or that does not parse, never matches.
fn verify_with(memory: &mut [Block], password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    if params.block_count() > memory.len() {
        tracing::error!(
            m_cost = params.m_cost(),
            "a stored Argon2 hash needs more memory than the pool holds; it never matches"
        );
        return false;
    }
    let mut out = vec![0u8; expected.len()];
    if Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
        .is_err()
    {
        return false;
    }
    out.ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};

    #[tokio::test]
    async fn hashes_verify_here_and_with_the_reference_verifier() {
        let pool = PasswordPool::new(1, 4);
        let phc = pool.hash("correct horse battery").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(pool
            .verify("correct horse battery", Some(&phc))
            .await
            .unwrap());
        assert!(!pool
            .verify("correct horse battery!", Some(&phc))
            .await
            .unwrap());
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse battery", &parsed)
            .is_ok());
    }

    #[tokio::test]
    async fn hashes_of_earlier_versions_verify() {
        // What `oauth::secrets::hash_secret` of earlier versions wrote: the crate's
        // defaults through its PHC hasher.
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let legacy = Argon2::default()
            .hash_password(b"s3cret-s3cret", &salt)
            .unwrap()
            .to_string();
        let pool = PasswordPool::new(1, 4);
        assert!(pool.verify("s3cret-s3cret", Some(&legacy)).await.unwrap());
        assert!(!pool.verify("other", Some(&legacy)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_and_malformed_hashes_never_match() {
        let pool = PasswordPool::new(1, 4);
        assert!(!pool.verify("", None).await.unwrap());
        assert!(!pool.verify("appfence dummy password", None).await.unwrap());
        for bad in [
            "",
            "not a phc",
            "sha256:00",
            "$argon2id$v=19$m=999999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        ] {
            assert!(!pool.verify("x", Some(bad)).await.unwrap(), "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_instead_of_waiting() {
        let pool = Arc::new(PasswordPool::new(1, 1));
        let phc = pool.hash("pw-pw-pw-pw-pw").await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (pool, phc) = (pool.clone(), phc.clone());
            tasks.push(tokio::spawn(async move {
                pool.verify("pw-pw-pw-pw-pw", Some(&phc)).await
            }));
        }
        let mut busy = 0;
        let mut verified = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(true) => verified += 1,
                Ok(false) => panic!("the right password failed"),
                Err(Busy) => busy += 1,
            }
        }
        // One runs, one waits: the other six are refused at once.
        assert!(
            verified >= 1 && busy >= 1,
            "verified {verified}, busy {busy}"
        );
        assert_eq!(verified + busy, 8);
        assert_eq!(pool.memory_bytes(), 19 * 1024 * 1024);
    }
}
