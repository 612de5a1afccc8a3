-- Indicators (MDE's indicators API), the per-tenant allowlist version that agents
-- compare with their own, and the denial events agents report.

CREATE TABLE indicators (
    -- AUTOINCREMENT: an id is never reused after a delete.
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    indicator_value     TEXT NOT NULL,   -- lower-case hex for FileSha256
    indicator_type      TEXT NOT NULL,
    action              TEXT NOT NULL,
    application         TEXT,
    source              TEXT NOT NULL,   -- display name of the app, or the user's UPN
    source_type         TEXT NOT NULL,   -- AadApp or User
    created_by          TEXT NOT NULL,   -- client id of the app, or the user's UPN
    title               TEXT NOT NULL,
    description         TEXT NOT NULL,
    recommended_actions TEXT,
    severity            TEXT NOT NULL,
    expiration_time     INTEGER,
    generate_alert      INTEGER NOT NULL,
    created             INTEGER NOT NULL,
    last_update         INTEGER NOT NULL,
    last_updated_by     TEXT,
    -- Submitting the same value and type again updates the indicator.
    UNIQUE (tenant_id, indicator_type, indicator_value)
);

CREATE INDEX indicators_by_tenant_created ON indicators(tenant_id, created DESC, id DESC);
CREATE INDEX indicators_by_expiration ON indicators(expiration_time)
    WHERE expiration_time IS NOT NULL;

-- Bumped in the same transaction as every change of a tenant's indicators; a tenant
-- without a row is at version 0.
CREATE TABLE allowlist_versions (
    tenant_id TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id),
    version   INTEGER NOT NULL
);

CREATE TABLE denial_events (
    -- Arrival order: breaks ties between events of the same tick.
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    machine_id TEXT NOT NULL REFERENCES machines(id),
    time       INTEGER NOT NULL,
    path       TEXT NOT NULL,
    sha256     TEXT,
    pid        INTEGER NOT NULL,
    uid        INTEGER,
    parent     TEXT,
    kind       TEXT NOT NULL,            -- exec or elfOpen
    monitor    INTEGER NOT NULL,
    received   INTEGER NOT NULL
);

CREATE INDEX denial_events_by_machine_time ON denial_events(machine_id, time DESC, seq DESC);

-- The events with their machine's name and device group, for listing.
CREATE VIEW machine_events AS
SELECT e.seq, e.tenant_id, e.machine_id, m.computer_dns_name, m.rbac_group_id,
       e.time, e.path, e.sha256, e.pid, e.uid, e.parent, e.kind, e.monitor
FROM denial_events e JOIN machines m ON m.id = e.machine_id;
