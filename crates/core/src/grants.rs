//! Sign-in without passwords, as the store keeps it: authorization codes (RFC 6749
//! §4.1 with PKCE), device codes (RFC 8628) and refresh tokens, each stored under the
//! SHA-256 of its secret only, and the public-client registrations of applications.

use appfence_proto::Timestamp;

/// What an [`OAuthGrant`] is.
pub mod kind {
    /// An authorization code (one use, 60 s).
    pub const CODE: &str = "code";
    /// A device code of the device authorization grant.
    pub const DEVICE: &str = "device";
    /// A refresh token.
    pub const REFRESH: &str = "refresh";
}

/// Where an [`OAuthGrant`] is in its life. The store changes it only from an expected
/// status (compare and set), so one use wins under any concurrency.
pub mod status {
    /// A device code nobody approved or denied yet.
    pub const PENDING: &str = "pending";
    /// A device code approved by its user, not yet redeemed.
    pub const APPROVED: &str = "approved";
    /// A device code its user denied.
    pub const DENIED: &str = "denied";
    /// A code not redeemed yet; a refresh token not rotated yet.
    pub const ACTIVE: &str = "active";
    /// Redeemed (a code, a device code) or rotated (a refresh token): presenting it
    /// again is a replay, which revokes its family.
    pub const USED: &str = "used";
    /// Revoked with its family.
    pub const REVOKED: &str = "revoked";
}

/// An authorization code, a device code or a refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthGrant {
    /// Hex SHA-256 of the code or token (256 random bits: a fast hash suffices).
    pub id_sha256: String,
    /// One of [`kind`].
    pub kind: String,
    pub tenant_id: String,
    pub client_id: String,
    /// The family: a code, the device code and every refresh token descending from
    /// them share it, so a replay revokes them all.
    pub family: String,
    /// Device codes: hex SHA-256 of the normalised user code (unique).
    pub user_code_sha256: Option<String>,
    /// The user, once known (a device code before approval has none).
    pub user_object_id: Option<String>,
    pub upn: Option<String>,
    /// One of [`status`].
    pub status: String,
    /// What the server needs to redeem it (redirect URI, PKCE challenge, scopes, ...),
    /// as JSON the store does not read.
    pub detail: String,
    pub created: Timestamp,
    pub expires: Timestamp,
    /// Device codes: the last poll of the token endpoint (for `slow_down`).
    pub last_poll: Option<Timestamp>,
    /// Device codes: the interval the client must keep between polls, in seconds, once
    /// it has been told to slow down (`None`: the server's default).
    pub poll_interval: Option<u32>,
}

/// How an application may take part in sign-in flows: public (no secret, PKCE) and
/// its registered redirect URIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRegistration {
    pub tenant_id: String,
    pub client_id: String,
    /// A public client (a native app, a script) cannot keep a secret: it presents none.
    pub public: bool,
    pub redirect_uris: Vec<String>,
}
