-- Queries at a million actions, and retention (as the SQLite migration 0011).
--
-- Requested orders are `col ASC NULLS FIRST, seq DESC` and `col DESC NULLS LAST, seq
-- DESC` (nulls are the smallest value, as OData says). Each index below matches one
-- of them exactly, read forwards; a column with (nearly) unique values has one index
-- whose backward scan serves the other direction, PostgreSQL sorting the rare ties
-- (incremental sort). Case-insensitive fields are ordered and compared by lower(col).

CREATE INDEX actions_by_tenant_id ON actions(tenant_id, id NULLS FIRST);
CREATE INDEX actions_by_tenant_created_nulls_first
    ON actions(tenant_id, created NULLS FIRST, seq);
CREATE INDEX actions_by_tenant_status_asc ON actions(tenant_id, status NULLS FIRST, seq DESC);
CREATE INDEX actions_by_tenant_status_desc
    ON actions(tenant_id, status DESC NULLS LAST, seq DESC);
CREATE INDEX actions_by_tenant_machine ON actions(tenant_id, machine_id NULLS FIRST, seq);
CREATE INDEX actions_by_tenant_type_asc
    ON actions(tenant_id, action_type NULLS FIRST, seq DESC);
CREATE INDEX actions_by_tenant_type_desc
    ON actions(tenant_id, action_type DESC NULLS LAST, seq DESC);
CREATE INDEX actions_by_tenant_requestor_asc
    ON actions(tenant_id, lower(requestor) NULLS FIRST, seq DESC);
CREATE INDEX actions_by_tenant_requestor_desc
    ON actions(tenant_id, lower(requestor) DESC NULLS LAST, seq DESC);
CREATE INDEX actions_by_tenant_last_update
    ON actions(tenant_id, last_update NULLS FIRST, seq);
CREATE INDEX actions_by_tenant_dns
    ON actions(tenant_id, lower(computer_dns_name) NULLS FIRST, seq);
CREATE INDEX actions_by_tenant_external_id_asc
    ON actions(tenant_id, external_id NULLS FIRST, seq DESC);
CREATE INDEX actions_by_tenant_external_id_desc
    ON actions(tenant_id, external_id DESC NULLS LAST, seq DESC);
CREATE INDEX actions_by_tenant_requestor_status
    ON actions(tenant_id, lower(requestor), status, created DESC, seq DESC);

CREATE INDEX actions_final_by_last_update ON actions(last_update)
    WHERE status IN ('Succeeded', 'Failed', 'TimeOut', 'Cancelled');
CREATE INDEX denial_events_by_received ON denial_events(received);

-- The audit trail of an action removed by retention is kept: the rows stay, only the
-- reference to actions goes (docs/architecture.md, "Retention").
ALTER TABLE action_audit DROP CONSTRAINT action_audit_action_id_fkey;
