-- The lifecycle of credentials (as SQLite's 0015): several secrets per application,
-- each with an id and an expiry; applications and users that can be disabled;
-- enrolment secrets with an id, an expiry, a use count and revocation.

CREATE TABLE app_secrets (
    id          TEXT PRIMARY KEY,          -- GUID (Entra's keyId)
    tenant_id   TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    secret_hash TEXT NOT NULL,             -- sha256:<hex>; Argon2id PHC from older versions
    hint        TEXT,                      -- the secret's first characters; NULL if migrated
    created     BIGINT NOT NULL,
    expires     BIGINT,                    -- NULL: never (migrated secrets)
    FOREIGN KEY (tenant_id, client_id) REFERENCES apps(tenant_id, client_id) ON DELETE CASCADE
);
CREATE INDEX app_secrets_by_app ON app_secrets(tenant_id, client_id, created);

-- Each application's one secret becomes its first secret, with no expiry: an upgrade
-- must not stop a playbook that works. Rotate it with `app secret add` and `remove`.
INSERT INTO app_secrets (id, tenant_id, client_id, secret_hash, hint, created, expires)
SELECT gen_random_uuid()::text, tenant_id, client_id, secret_hash, NULL, created, NULL
FROM apps;

ALTER TABLE apps DROP COLUMN secret_hash;
ALTER TABLE apps ADD COLUMN disabled BIGINT;   -- when disabled; NULL while enabled
ALTER TABLE users ADD COLUMN disabled BIGINT;  -- when disabled; NULL while enabled

-- Existing enrolment secrets: no expiry, no limit, no uses counted.
ALTER TABLE enroll_secrets
    ADD COLUMN id TEXT,
    ADD COLUMN expires BIGINT,                 -- NULL: never
    ADD COLUMN max_uses BIGINT,                -- NULL: any number of devices
    ADD COLUMN uses BIGINT NOT NULL DEFAULT 0, -- devices enrolled with it
    ADD COLUMN revoked BIGINT;                 -- when revoked; NULL while not
UPDATE enroll_secrets SET id = gen_random_uuid()::text;
ALTER TABLE enroll_secrets ALTER COLUMN id SET NOT NULL;
ALTER TABLE enroll_secrets ADD CONSTRAINT enroll_secrets_id_key UNIQUE (id);
CREATE INDEX enroll_secrets_by_tenant ON enroll_secrets(tenant_id, created);
