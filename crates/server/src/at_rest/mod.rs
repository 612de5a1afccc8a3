//! Secrets at rest: private files, and the key-encryption key that seals the signing
//! keys in the store.

pub mod kek;
pub mod private_paths;

pub use kek::KeyEncryptionKey;
