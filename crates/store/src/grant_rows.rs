//! Decoding the rows of sign-in grants and client registrations, for both engines.

use appfence_core::grants::{ClientRegistration, OAuthGrant};
use appfence_core::{Error, Result};
use appfence_proto::Timestamp;

use crate::rows::RowGet;

pub(crate) const GRANT_COLUMNS: &str = "id_sha256, kind, tenant_id, client_id, family, \
     user_code_sha256, user_object_id, upn, status, detail, created, expires, last_poll, poll_interval";

pub(crate) fn grant<R: RowGet>(row: &R) -> Result<OAuthGrant> {
    Ok(OAuthGrant {
        id_sha256: row.text("id_sha256")?,
        kind: row.text("kind")?,
        tenant_id: row.text("tenant_id")?,
        client_id: row.text("client_id")?,
        family: row.text("family")?,
        user_code_sha256: row.opt_text("user_code_sha256")?,
        user_object_id: row.opt_text("user_object_id")?,
        upn: row.opt_text("upn")?,
        status: row.text("status")?,
        detail: row.text("detail")?,
        created: Timestamp::from_ticks(row.int("created")?),
        expires: Timestamp::from_ticks(row.int("expires")?),
        last_poll: row.opt_int("last_poll")?.map(Timestamp::from_ticks),
        poll_interval: row
            .opt_int("poll_interval")?
            .map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
    })
}

pub(crate) fn client<R: RowGet>(row: &R) -> Result<ClientRegistration> {
    let uris = row.text("redirect_uris")?;
    Ok(ClientRegistration {
        tenant_id: row.text("tenant_id")?,
        client_id: row.text("client_id")?,
        public: row.boolean("public")?,
        redirect_uris: serde_json::from_str(&uris)
            .map_err(|e| Error::Internal(format!("bad JSON in column redirect_uris: {e}")))?,
    })
}
