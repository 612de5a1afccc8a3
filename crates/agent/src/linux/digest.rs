//! Hashing an open file through its descriptor, bounded in size and in time, and the
//! ELF check. Reads go through `pread` on the event's descriptor: never by path, so
//! the file that is hashed is exactly the file being opened.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Instant;

use md5::Md5;
use sha2::{Digest, Sha256};

use super::sys::pread;

/// A SHA-256 digest.
pub type Sha256Hash = [u8; 32];
/// An MD5 digest (what dpkg records).
pub type Md5Hash = [u8; 16];

const CHUNK: usize = 256 * 1024;

/// The digests of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digests {
    pub sha256: Sha256Hash,
    /// Computed only when asked for (the file is in the package index).
    pub md5: Option<Md5Hash>,
}

#[derive(Debug)]
pub enum HashOutcome {
    Done(Digests),
    /// Larger than the configured limit: never hashed, never trusted.
    TooLarge,
    /// The deadline passed before the end of the file.
    TimedOut,
    Failed(io::Error),
}

/// Hashes the whole of `file`, stopping if it exceeds `size_limit` bytes (even if it
/// grows while being read) or if `deadline` passes.
pub fn hash_file(
    file: BorrowedFd<'_>,
    size_hint: u64,
    want_md5: bool,
    size_limit: u64,
    deadline: Instant,
) -> HashOutcome {
    if size_hint > size_limit {
        return HashOutcome::TooLarge;
    }
    let mut sha = Sha256::new();
    let mut md5 = want_md5.then(Md5::new);
    let mut buf = vec![0u8; CHUNK];
    let mut offset: u64 = 0;
    loop {
        if Instant::now() >= deadline {
            return HashOutcome::TimedOut;
        }
        let n = match pread(file, &mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return HashOutcome::Failed(e),
        };
        offset += n as u64;
        if offset > size_limit {
            return HashOutcome::TooLarge;
        }
        sha.update(&buf[..n]);
        if let Some(m) = md5.as_mut() {
            m.update(&buf[..n]);
        }
    }
    HashOutcome::Done(Digests {
        sha256: sha.finalize().into(),
        md5: md5.map(|m| m.finalize().into()),
    })
}

/// Whether `file` starts with the ELF magic number.
pub fn is_elf(file: BorrowedFd<'_>) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match pread(file, &mut magic[got..], got as u64)? {
            0 => return Ok(false),
            n => got += n,
        }
    }
    Ok(&magic == b"\x7fELF")
}

/// Parses a SHA-256 written as 64 hexadecimal digits (either case).
pub fn parse_sha256_hex(text: &str) -> Option<Sha256Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn file_with(bytes: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn hashes_match_known_values() {
        let f = file_with(b"abc");
        let HashOutcome::Done(d) = hash_file(f.as_fd(), 3, true, 1 << 20, far()) else {
            panic!("not hashed")
        };
        assert_eq!(
            hex::encode(d.sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(d.md5.unwrap()),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        let HashOutcome::Done(d) = hash_file(f.as_fd(), 3, false, 1 << 20, far()) else {
            panic!("not hashed")
        };
        assert!(d.md5.is_none());
    }

    #[test]
    fn size_and_time_are_bounded() {
        let f = file_with(&vec![7u8; 1000]);
        assert!(matches!(
            hash_file(f.as_fd(), 1000, false, 999, far()),
            HashOutcome::TooLarge
        ));
        // The size hint can be stale: a file that grew past the limit is caught while read.
        assert!(matches!(
            hash_file(f.as_fd(), 10, false, 999, far()),
            HashOutcome::TooLarge
        ));
        assert!(matches!(
            hash_file(f.as_fd(), 1000, false, 1 << 20, Instant::now()),
            HashOutcome::TimedOut
        ));
    }

    #[test]
    fn elf_magic_is_recognised() {
        assert!(is_elf(file_with(b"\x7fELF\x02\x01").as_fd()).unwrap());
        assert!(!is_elf(file_with(b"#!/bin/sh\n").as_fd()).unwrap());
        assert!(!is_elf(file_with(b"\x7fEL").as_fd()).unwrap());
        assert!(!is_elf(file_with(b"").as_fd()).unwrap());
    }

    #[test]
    fn sha256_hex_is_parsed() {
        let h = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(parse_sha256_hex(h).unwrap()[0], 0xba);
        assert!(parse_sha256_hex("abc").is_none());
    }
}
