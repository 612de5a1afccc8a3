-- appfence's SQLite schema. Timestamps are INTEGER 100-ns ticks since the Unix epoch;
-- lists of strings and small structs are JSON text.

CREATE TABLE tenants (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL
);

CREATE TABLE apps (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    client_id    TEXT NOT NULL,
    display_name TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    roles        TEXT NOT NULL,          -- JSON array of strings
    created      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, client_id)
);

CREATE TABLE enroll_secrets (
    secret_sha256 TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    created       INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    algorithm   TEXT NOT NULL,
    private_key BLOB NOT NULL,
    public_key  BLOB NOT NULL,
    created     INTEGER NOT NULL
);

CREATE TABLE machines (
    id                TEXT PRIMARY KEY NOT NULL,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    aad_device_id     TEXT NOT NULL UNIQUE,
    computer_dns_name TEXT NOT NULL,      -- lower case
    first_seen        INTEGER NOT NULL,
    last_seen         INTEGER,
    os_platform       TEXT NOT NULL,
    os_version        TEXT NOT NULL,
    kernel_version    TEXT NOT NULL,
    os_architecture   TEXT NOT NULL,
    agent_version     TEXT NOT NULL,
    last_ip_address   TEXT,
    ip_addresses      TEXT NOT NULL,      -- JSON array of strings
    health_status     TEXT NOT NULL,
    onboarding_status TEXT NOT NULL,
    machine_tags      TEXT NOT NULL,      -- JSON array of strings
    rbac_group_id     INTEGER NOT NULL,
    rbac_group_name   TEXT,
    risk_score        TEXT NOT NULL,
    exposure_level    TEXT NOT NULL,
    device_value      TEXT NOT NULL,
    capabilities      TEXT NOT NULL,      -- JSON object
    enforcement       TEXT NOT NULL,      -- JSON object
    credential_sha256 TEXT NOT NULL UNIQUE,
    UNIQUE (tenant_id, computer_dns_name)
);

CREATE INDEX machines_by_tenant_first_seen ON machines(tenant_id, first_seen DESC);

CREATE TABLE actions (
    -- Insertion order: breaks ties between actions created in the same tick.
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
    id                     TEXT NOT NULL UNIQUE,
    tenant_id              TEXT NOT NULL REFERENCES tenants(id),
    action_type            TEXT NOT NULL,
    title                  TEXT,
    requestor              TEXT NOT NULL,
    requestor_comment      TEXT NOT NULL,
    status                 TEXT NOT NULL,
    machine_id             TEXT NOT NULL REFERENCES machines(id),
    computer_dns_name      TEXT NOT NULL,
    created                INTEGER NOT NULL,
    last_update            INTEGER NOT NULL,
    cancellation_requestor TEXT,
    cancellation_comment   TEXT,
    cancellation_time      INTEGER,
    error_h_result         INTEGER NOT NULL DEFAULT 0,
    external_id            TEXT,
    request_source         TEXT NOT NULL,
    troubleshoot_info      TEXT
);

-- The duplicate rule (spec section 7): at most one open restrict-family action per
-- device, enforced by the database so that it holds under any concurrency.
CREATE UNIQUE INDEX actions_one_open_restrict_family ON actions(machine_id)
    WHERE status IN ('Pending', 'InProgress')
      AND action_type IN ('RestrictCodeExecution', 'UnrestrictCodeExecution');

CREATE INDEX actions_by_tenant_created ON actions(tenant_id, created DESC, seq DESC);
CREATE INDEX actions_by_machine_status ON actions(machine_id, status, seq);
CREATE INDEX actions_by_status ON actions(status, created);

CREATE TABLE action_audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id   TEXT NOT NULL REFERENCES actions(id),
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    from_status TEXT,                     -- NULL for the creation
    to_status   TEXT NOT NULL,
    reason      TEXT
);

CREATE INDEX action_audit_by_action ON action_audit(action_id, seq);

-- The audit trail is append-only, whatever the code above the database does.
CREATE TRIGGER action_audit_no_update BEFORE UPDATE ON action_audit
BEGIN
    SELECT RAISE(ABORT, 'action_audit is append-only');
END;

CREATE TRIGGER action_audit_no_delete BEFORE DELETE ON action_audit
BEGIN
    SELECT RAISE(ABORT, 'action_audit is append-only');
END;
