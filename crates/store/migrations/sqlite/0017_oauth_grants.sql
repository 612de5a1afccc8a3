-- Sign-in without passwords: authorization codes, device codes and refresh tokens,
-- each under the SHA-256 of its secret only, shared by every replica.
CREATE TABLE oauth_grants (
    id_sha256        TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL,          -- 'code', 'device', 'refresh'
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    client_id        TEXT NOT NULL,
    family           TEXT NOT NULL,          -- revoked together on a replay
    user_code_sha256 TEXT UNIQUE,            -- device codes
    user_object_id   TEXT,
    upn              TEXT,
    status           TEXT NOT NULL,
    detail           TEXT NOT NULL,          -- JSON the server reads
    created          INTEGER NOT NULL,
    expires          INTEGER NOT NULL,
    last_poll        INTEGER
);
CREATE INDEX oauth_grants_by_family ON oauth_grants(family);
CREATE INDEX oauth_grants_by_expires ON oauth_grants(expires);

-- Public clients and redirect URIs of applications.
CREATE TABLE oauth_clients (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    client_id     TEXT NOT NULL,
    public        INTEGER NOT NULL,
    redirect_uris TEXT NOT NULL,             -- JSON array of strings
    PRIMARY KEY (tenant_id, client_id)
);
