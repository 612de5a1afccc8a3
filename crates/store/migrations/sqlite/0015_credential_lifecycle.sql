-- The lifecycle of credentials: several secrets per application (rotation without
-- downtime), each with an id and an expiry; applications and users that can be
-- disabled; enrolment secrets with an id, an expiry, a use count and revocation.

CREATE TABLE app_secrets (
    id          TEXT PRIMARY KEY NOT NULL,  -- GUID (Entra's keyId)
    tenant_id   TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    secret_hash TEXT NOT NULL,              -- sha256:<hex>; Argon2id PHC from older versions
    hint        TEXT,                       -- the secret's first characters; NULL if migrated
    created     INTEGER NOT NULL,
    expires     INTEGER,                    -- NULL: never (migrated secrets)
    FOREIGN KEY (tenant_id, client_id) REFERENCES apps(tenant_id, client_id) ON DELETE CASCADE
);
CREATE INDEX app_secrets_by_app ON app_secrets(tenant_id, client_id, created);

-- Each application's one secret becomes its first secret, with no expiry: an upgrade
-- must not stop a playbook that works. Rotate it with `app secret add` and `remove`.
-- Ids are random version-4 GUIDs.
INSERT INTO app_secrets (id, tenant_id, client_id, secret_hash, hint, created, expires)
SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
             substr(hex(randomblob(2)), 2) || '-' ||
             substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) ||
             '-' || hex(randomblob(6))),
       tenant_id, client_id, secret_hash, NULL, created, NULL
FROM apps;

ALTER TABLE apps DROP COLUMN secret_hash;
ALTER TABLE apps ADD COLUMN disabled INTEGER;   -- when disabled; NULL while enabled
ALTER TABLE users ADD COLUMN disabled INTEGER;  -- when disabled; NULL while enabled

-- Enrolment secrets get an id (to revoke them by), an expiry, an optional number of
-- uses and a revocation time. Existing ones: no expiry, no limit, no uses counted.
CREATE TABLE enroll_secrets_new (
    id            TEXT PRIMARY KEY NOT NULL,  -- GUID
    secret_sha256 TEXT NOT NULL UNIQUE,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    created       INTEGER NOT NULL,
    expires       INTEGER,                    -- NULL: never
    max_uses      INTEGER,                    -- NULL: any number of devices
    uses          INTEGER NOT NULL DEFAULT 0, -- devices enrolled with it
    revoked       INTEGER                     -- when revoked; NULL while not
);
INSERT INTO enroll_secrets_new (id, secret_sha256, tenant_id, created)
SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
             substr(hex(randomblob(2)), 2) || '-' ||
             substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) ||
             '-' || hex(randomblob(6))),
       secret_sha256, tenant_id, created
FROM enroll_secrets;
DROP TABLE enroll_secrets;
ALTER TABLE enroll_secrets_new RENAME TO enroll_secrets;
CREATE INDEX enroll_secrets_by_tenant ON enroll_secrets(tenant_id, created);
