//! The built-in OAuth 2.0 authorization server (client credentials and password grants,
//! Entra ID-shaped tokens signed with Ed25519) and the authentication of API requests.
//!
//! - [`keys`]: signing keys, persisted in the store, and the JWKS.
//! - [`secrets`]: client secrets, enrolment secrets and device credentials (SHA-256).
//! - [`apps`]: registering applications and their secrets; the default tenant.
//! - [`users`]: local users for the password grant, and their lifecycle.
//! - [`audience`]: accepted audiences and issuers.
//! - [`tokens`]: minting tokens; [`verify`]: checking them.
//! - [`request`], [`failure`], [`routes`]: the token, discovery and JWKS endpoints.
//! - [`extract`]: the `Authenticated` extractor of API handlers.
//! - [`flows`]: sign-in without passwords (authorization code + PKCE, device code,
//!   refresh tokens).
//! - [`principal_state`]: whether a token's application and user may still act.
//! - [`tenants`]: tenant lookups by path segment, and the cache of known tenants.

pub mod apps;
pub mod audience;
pub mod claims;
pub mod external;
pub mod extract;
pub mod failure;
pub mod flows;
pub mod keyring;
pub mod keys;
pub mod password_pool;
pub mod principal_state;
pub mod request;
pub mod routes;
pub mod secrets;
pub mod sign_in;
pub mod tenants;
pub mod token_cache;
pub mod tokens;
pub mod users;
pub mod verify;

pub use extract::Authenticated;
pub use tokens::{issue_app_token, TokenVersion};
