//! The files no block may touch: without them the host cannot be managed (the agent
//! itself, the dynamic loader every dynamic program needs, PID 1's executable). They
//! are hashed once and reported, so that the server refuses such indicators; the
//! enforcer also drops any block for them that reaches it.

use std::io::Read;
use std::path::{Path, PathBuf};

use appfence_proto::agent::{ProtectedFile, ProtectedRole};
use sha2::Digest;

/// Loaders looked for when the agent's binary names none (a static build).
const LOADER_CANDIDATES: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-armhf.so.3",
    "/lib/ld-linux.so.2",
];

/// The protected files of this host, hashed; files that cannot be read are left out
/// (and logged).
pub fn protected_files() -> Vec<ProtectedFile> {
    let own = Path::new("/proc/self/exe");
    let mut wanted: Vec<(PathBuf, ProtectedRole)> = Vec::new();
    wanted.push((own.to_path_buf(), ProtectedRole::Agent));
    match std::fs::read(own).ok().and_then(|elf| interpreter(&elf)) {
        Some(loader) => wanted.push((loader, ProtectedRole::Loader)),
        None => wanted.extend(
            LOADER_CANDIDATES
                .iter()
                .map(|p| (PathBuf::from(p), ProtectedRole::Loader)),
        ),
    }
    wanted.push((PathBuf::from("/proc/1/exe"), ProtectedRole::Init));
    let mut out: Vec<ProtectedFile> = Vec::new();
    for (path, role) in wanted {
        let shown = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        match sha256_of(&path) {
            Ok(sha256) => {
                if !out.iter().any(|p| p.sha256 == sha256 && p.role == role) {
                    out.push(ProtectedFile {
                        sha256,
                        path: shown.display().to_string(),
                        role,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && role == ProtectedRole::Loader => {
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot hash a protected file")
            }
        }
    }
    out
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The `PT_INTERP` path of a 64-bit little-endian ELF image, if it names one.
pub fn interpreter(elf: &[u8]) -> Option<PathBuf> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| {
        let v = u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    let phoff = u64_at(0x20)?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    for n in 0..phnum {
        let header = phoff.checked_add(n.checked_mul(phentsize)?)?;
        if u32_at(header)? != PT_INTERP {
            continue;
        }
        let (offset, size) = (u64_at(header + 8)?, u64_at(header + 0x20)?);
        let raw = elf.get(offset..offset.checked_add(size)?)?;
        let name = raw.split(|b| *b == 0).next()?;
        return Some(PathBuf::from(std::str::from_utf8(name).ok()?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_binary_names_its_loader_and_everything_is_hashed() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let loader = interpreter(&me).expect("a dynamic test binary names its loader");
        assert!(loader.to_string_lossy().contains("ld-linux"), "{loader:?}");
        assert_eq!(interpreter(b"\x7fELF not really"), None);
        assert_eq!(interpreter(b"#!/bin/sh\n"), None);

        let files = protected_files();
        let roles: Vec<ProtectedRole> = files.iter().map(|f| f.role).collect();
        assert!(roles.contains(&ProtectedRole::Agent), "{files:?}");
        assert!(roles.contains(&ProtectedRole::Loader), "{files:?}");
        let agent = files
            .iter()
            .find(|f| f.role == ProtectedRole::Agent)
            .unwrap();
        assert_eq!(
            agent.sha256,
            sha256_of(Path::new("/proc/self/exe")).unwrap()
        );
        assert!(files
            .iter()
            .all(|f| crate::enforcer::is_sha256_hex(&f.sha256)));
    }
}
