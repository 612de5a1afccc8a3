-- Queries at a million actions, and retention.
--
-- 1. Every `$orderby` field of the actions is served by an index that leads with the
--    tenant and ends with the tie-break `seq`, so a page is read in order and stops at
--    `$top`. Requested orders are `col ASC, seq DESC` and `col DESC, seq DESC`: where a
--    column has few distinct values (status, type, requestor, externalId) each
--    direction has an index of its own (one is read forwards, the other backwards);
--    where values are (nearly) unique one index serves both, SQLite sorting the rare
--    ties. Case-insensitive fields are ordered and compared with NOCASE, so their index
--    uses that collation.
-- 2. The common "one application's actions with a status" filter has a composite
--    index in the default order.
-- 3. Retention: final actions are removed by age, and denial events by arrival. The
--    audit trail of a removed action is kept (docs/architecture.md, "Retention"): the
--    reference from action_audit to actions goes, the rows and their append-only
--    triggers stay.

CREATE INDEX actions_by_tenant_id ON actions(tenant_id, id);
CREATE INDEX actions_by_tenant_status_asc ON actions(tenant_id, status, seq DESC);
CREATE INDEX actions_by_tenant_status_desc ON actions(tenant_id, status, seq);
CREATE INDEX actions_by_tenant_machine ON actions(tenant_id, machine_id, seq DESC);
CREATE INDEX actions_by_tenant_type_asc ON actions(tenant_id, action_type, seq DESC);
CREATE INDEX actions_by_tenant_type_desc ON actions(tenant_id, action_type, seq);
CREATE INDEX actions_by_tenant_requestor_asc
    ON actions(tenant_id, requestor COLLATE NOCASE, seq DESC);
CREATE INDEX actions_by_tenant_requestor_desc
    ON actions(tenant_id, requestor COLLATE NOCASE, seq);
CREATE INDEX actions_by_tenant_last_update ON actions(tenant_id, last_update, seq DESC);
CREATE INDEX actions_by_tenant_dns
    ON actions(tenant_id, computer_dns_name COLLATE NOCASE, seq DESC);
CREATE INDEX actions_by_tenant_external_id_asc ON actions(tenant_id, external_id, seq DESC);
CREATE INDEX actions_by_tenant_external_id_desc ON actions(tenant_id, external_id, seq);
CREATE INDEX actions_by_tenant_requestor_status
    ON actions(tenant_id, requestor COLLATE NOCASE, status, created DESC, seq DESC);

CREATE INDEX actions_final_by_last_update ON actions(last_update)
    WHERE status IN ('Succeeded', 'Failed', 'TimeOut', 'Cancelled');
CREATE INDEX denial_events_by_received ON denial_events(received);

-- action_audit without its reference to actions (SQLite cannot drop a constraint: the
-- table is rebuilt). The creation trigger on actions names the table, so it is dropped
-- and created again around the rebuild.
DROP TRIGGER actions_audit_creation;

CREATE TABLE action_audit_kept (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    from_status TEXT,                     -- NULL for the creation
    to_status   TEXT NOT NULL,
    reason      TEXT
);
INSERT INTO action_audit_kept (seq, action_id, at, actor, from_status, to_status, reason)
    SELECT seq, action_id, at, actor, from_status, to_status, reason FROM action_audit;
-- DROP TABLE fires no triggers, so the append-only trigger does not refuse it.
DROP TABLE action_audit;
ALTER TABLE action_audit_kept RENAME TO action_audit;

CREATE INDEX action_audit_by_action ON action_audit(action_id, seq);

CREATE TRIGGER action_audit_no_update BEFORE UPDATE ON action_audit
BEGIN
    SELECT RAISE(ABORT, 'action_audit is append-only');
END;

CREATE TRIGGER action_audit_no_delete BEFORE DELETE ON action_audit
BEGIN
    SELECT RAISE(ABORT, 'action_audit is append-only');
END;

CREATE TRIGGER actions_audit_creation AFTER INSERT ON actions
BEGIN
    INSERT INTO action_audit (action_id, at, actor, from_status, to_status, reason)
    VALUES (NEW.id, NEW.created, NEW.requestor, NULL, NEW.status, NULL);
END;
