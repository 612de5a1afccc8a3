-- Signed-in sessions of the web console, kept in the database so that every replica
-- knows them. The cookie carries a random secret; only its SHA-256 is stored.
CREATE TABLE console_sessions (
    id_sha256      TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    user_object_id TEXT NOT NULL,         -- oid: not only local users, so no reference
    upn            TEXT NOT NULL,
    groups         JSONB NOT NULL,        -- as users.groups
    issuer         TEXT NOT NULL,         -- 'local', or the external issuer's URL
    created        BIGINT NOT NULL,
    last_seen      BIGINT NOT NULL,
    expires        BIGINT NOT NULL
);

-- A user's sessions: counted at sign-in (a bound per user), deleted when disabled.
CREATE INDEX console_sessions_by_user ON console_sessions(tenant_id, user_object_id);
-- Sessions past their absolute expiry, for the sweeper.
CREATE INDEX console_sessions_by_expires ON console_sessions(expires);
