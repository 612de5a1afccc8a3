-- appfence's PostgreSQL schema: the same tables as the SQLite store's (after its
-- migrations 0001-0008), in PostgreSQL's types. Timestamps are BIGINT 100-ns ticks
-- since the Unix epoch; lists and small structs are JSONB.

CREATE TABLE tenants (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE apps (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    client_id    TEXT NOT NULL,
    display_name TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    roles        JSONB NOT NULL,
    created      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, client_id)
);

CREATE TABLE enroll_secrets (
    secret_sha256 TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    created       BIGINT NOT NULL
);

-- The private part only ever sealed with the key-encryption key (see the SQLite
-- migration 0006); seq breaks ties between keys made in the same tick.
CREATE TABLE signing_keys (
    seq                BIGSERIAL NOT NULL,
    kid                TEXT PRIMARY KEY,
    algorithm          TEXT NOT NULL,
    public_key         BYTEA NOT NULL,
    sealed_private_key BYTEA,
    kek_id             TEXT,
    created            BIGINT NOT NULL,
    activates          BIGINT NOT NULL,
    verify_until       BIGINT,
    retired            BIGINT
);

CREATE TABLE users (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    object_id     TEXT NOT NULL UNIQUE,
    upn           TEXT NOT NULL,          -- lower case
    password_hash TEXT NOT NULL,
    groups        JSONB NOT NULL,
    created       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, upn)
);

CREATE TABLE machines (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants(id),
    aad_device_id         TEXT NOT NULL UNIQUE,
    computer_dns_name     TEXT NOT NULL,      -- lower case
    first_seen            BIGINT NOT NULL,
    last_seen             BIGINT,
    os_platform           TEXT NOT NULL,
    os_version            TEXT NOT NULL,
    kernel_version        TEXT NOT NULL,
    os_architecture       TEXT NOT NULL,
    agent_version         TEXT NOT NULL,
    last_ip_address       TEXT,
    ip_addresses          JSONB NOT NULL,
    health_status         TEXT NOT NULL,
    onboarding_status     TEXT NOT NULL,
    machine_tags          JSONB NOT NULL,
    rbac_group_id         BIGINT NOT NULL,
    rbac_group_name       TEXT,
    risk_score            TEXT NOT NULL,
    exposure_level        TEXT NOT NULL,
    device_value          TEXT NOT NULL,
    capabilities          JSONB NOT NULL,
    enforcement           JSONB NOT NULL,
    credential_sha256     TEXT NOT NULL UNIQUE,
    enrollment_key_sha256 TEXT,
    CONSTRAINT machines_dns_name_in_tenant UNIQUE (tenant_id, computer_dns_name)
);

CREATE INDEX machines_by_tenant_first_seen ON machines(tenant_id, first_seen DESC);

CREATE TABLE actions (
    -- Insertion order: breaks ties between actions created in the same tick.
    seq                    BIGSERIAL PRIMARY KEY,
    id                     TEXT NOT NULL UNIQUE,
    tenant_id              TEXT NOT NULL REFERENCES tenants(id),
    action_type            TEXT NOT NULL,
    title                  TEXT,
    requestor              TEXT NOT NULL,
    requestor_comment      TEXT NOT NULL,
    status                 TEXT NOT NULL,
    machine_id             TEXT NOT NULL REFERENCES machines(id),
    computer_dns_name      TEXT NOT NULL,
    created                BIGINT NOT NULL,
    last_update            BIGINT NOT NULL,
    cancellation_requestor TEXT,
    cancellation_comment   TEXT,
    cancellation_time      BIGINT,
    error_h_result         BIGINT NOT NULL DEFAULT 0,
    external_id            TEXT,
    request_source         TEXT NOT NULL,
    troubleshoot_info      TEXT
);

-- The duplicate rule: at most one open restrict-family action per device, enforced
-- by the database, so it holds under any concurrency and across replicas.
CREATE UNIQUE INDEX actions_one_open_restrict_family ON actions(machine_id)
    WHERE status IN ('Pending', 'InProgress')
      AND action_type IN ('RestrictCodeExecution', 'UnrestrictCodeExecution');

CREATE INDEX actions_by_tenant_created ON actions(tenant_id, created DESC, seq DESC);
CREATE INDEX actions_by_machine_status ON actions(machine_id, status, seq);
CREATE INDEX actions_by_status ON actions(status, created);

CREATE TABLE action_audit (
    seq         BIGSERIAL PRIMARY KEY,
    action_id   TEXT NOT NULL REFERENCES actions(id),
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT
);

CREATE INDEX action_audit_by_action ON action_audit(action_id, seq);

-- Audit tables are append-only, whatever the code above the database does.
CREATE FUNCTION appfence_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END
$$;

CREATE TRIGGER action_audit_append_only BEFORE UPDATE OR DELETE ON action_audit
    FOR EACH ROW EXECUTE FUNCTION appfence_append_only();

-- The creation of an action is recorded in its audit trail in the same statement.
CREATE FUNCTION appfence_audit_creation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO action_audit (action_id, at, actor, from_status, to_status, reason)
    VALUES (NEW.id, NEW.created, NEW.requestor, NULL, NEW.status, NULL);
    RETURN NEW;
END
$$;

CREATE TRIGGER actions_audit_creation AFTER INSERT ON actions
    FOR EACH ROW EXECUTE FUNCTION appfence_audit_creation();

CREATE TABLE indicators (
    id                  BIGSERIAL PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    indicator_value     TEXT NOT NULL,
    indicator_type      TEXT NOT NULL,
    action              TEXT NOT NULL,
    application         TEXT,
    source              TEXT NOT NULL,
    source_type         TEXT NOT NULL,
    created_by          TEXT NOT NULL,
    title               TEXT NOT NULL,
    description         TEXT NOT NULL,
    recommended_actions TEXT,
    severity            TEXT NOT NULL,
    expiration_time     BIGINT,
    generate_alert      BOOLEAN NOT NULL,
    created             BIGINT NOT NULL,
    last_update         BIGINT NOT NULL,
    last_updated_by     TEXT,
    UNIQUE (tenant_id, indicator_type, indicator_value)
);

CREATE INDEX indicators_by_tenant_created ON indicators(tenant_id, created DESC, id DESC);
CREATE INDEX indicators_by_expiration ON indicators(expiration_time)
    WHERE expiration_time IS NOT NULL;

CREATE TABLE allowlist_versions (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
    version   BIGINT NOT NULL
);

CREATE TABLE denial_events (
    seq        BIGSERIAL PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    machine_id TEXT NOT NULL REFERENCES machines(id),
    time       BIGINT NOT NULL,
    path       TEXT NOT NULL,
    sha256     TEXT,
    pid        BIGINT NOT NULL,
    uid        BIGINT,
    parent     TEXT,
    kind       TEXT NOT NULL,
    monitor    BOOLEAN NOT NULL,
    received   BIGINT NOT NULL
);

CREATE INDEX denial_events_by_machine_time ON denial_events(machine_id, time DESC, seq DESC);

CREATE VIEW machine_events AS
SELECT e.seq, e.tenant_id, e.machine_id, m.computer_dns_name, m.rbac_group_id,
       e.time, e.path, e.sha256, e.pid, e.uid, e.parent, e.kind, e.monitor
FROM denial_events e JOIN machines m ON m.id = e.machine_id;

CREATE TABLE sign_in_throttle (
    key               TEXT PRIMARY KEY,
    tenant_id         TEXT,
    subject           TEXT NOT NULL,
    failures          BIGINT NOT NULL,
    window_start      BIGINT NOT NULL,
    locked_until      BIGINT,
    lockouts          BIGINT NOT NULL,
    lock_end_recorded BOOLEAN NOT NULL
);

CREATE INDEX sign_in_throttle_lock_ends ON sign_in_throttle(locked_until)
    WHERE NOT lock_end_recorded;

CREATE TABLE audit_events (
    seq       BIGSERIAL PRIMARY KEY,
    at        BIGINT NOT NULL,
    tenant_id TEXT,
    event     TEXT NOT NULL,
    subject   TEXT NOT NULL,
    actor     TEXT NOT NULL,
    detail    TEXT
);

CREATE INDEX audit_events_by_at ON audit_events(at, seq);

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION appfence_append_only();

CREATE TABLE machine_addresses (
    machine_id TEXT NOT NULL REFERENCES machines(id),
    tenant_id  TEXT NOT NULL,
    ip         TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);

CREATE INDEX machine_addresses_by_ip ON machine_addresses(tenant_id, ip, last_seen);
CREATE INDEX machine_addresses_by_machine ON machine_addresses(machine_id, ip, last_seen);
CREATE INDEX machine_addresses_by_age ON machine_addresses(last_seen);

-- MDE's rate limits across replicas: calls counted per (caller key, window start).
-- UNLOGGED: fast, and losing the counts of the current window in a crash costs nothing
-- that matters.
CREATE UNLOGGED TABLE rate_windows (
    key          TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    calls        BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);
