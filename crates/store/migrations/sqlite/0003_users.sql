-- Users of the built-in issuer (password grant). Passwords are kept only as Argon2id
-- PHC strings; groups are a JSON array of group ids matched against the RBAC config.
CREATE TABLE users (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    object_id     TEXT NOT NULL UNIQUE,
    upn           TEXT NOT NULL,          -- lower case
    password_hash TEXT NOT NULL,
    groups        TEXT NOT NULL,          -- JSON array of strings
    created       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, upn)
);
