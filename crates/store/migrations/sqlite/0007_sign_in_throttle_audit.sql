-- Throttled guessing: failure counters of user accounts ('user:<tenant>:<upn>') and of
-- source addresses ('addr:<address>'), shared by every replica on this database.
CREATE TABLE sign_in_throttle (
    key               TEXT PRIMARY KEY NOT NULL,
    tenant_id         TEXT,               -- the account's tenant; NULL for addresses
    subject           TEXT NOT NULL,      -- the user name, or the address
    failures          INTEGER NOT NULL,
    window_start      INTEGER NOT NULL,
    locked_until      INTEGER,
    lockouts          INTEGER NOT NULL,
    lock_end_recorded INTEGER NOT NULL    -- 0 while a lockout's end is not yet audited
);

CREATE INDEX sign_in_throttle_lock_ends ON sign_in_throttle(locked_until)
    WHERE lock_end_recorded = 0;

-- Security events other than action status changes (lockouts, key rotation and
-- retirement, ...). Append-only, like action_audit.
CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    tenant_id TEXT,                       -- NULL for server-wide events
    event     TEXT NOT NULL,
    subject   TEXT NOT NULL,
    actor     TEXT NOT NULL,
    detail    TEXT
);

CREATE INDEX audit_events_by_at ON audit_events(at, seq);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
