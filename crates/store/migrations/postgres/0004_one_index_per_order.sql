-- A requested order's tie-break (seq) now runs in the direction of its last field, so
-- the index (tenant_id, field DESC NULLS LAST, seq DESC) serves an order both ways:
-- forwards for descending, backwards for ascending (field ASC NULLS FIRST, seq ASC).
-- The second index each of these fields had only cost every insert: dropped.
DROP INDEX IF EXISTS actions_by_tenant_status_asc;
DROP INDEX IF EXISTS actions_by_tenant_type_asc;
DROP INDEX IF EXISTS actions_by_tenant_requestor_asc;
DROP INDEX IF EXISTS actions_by_tenant_external_id_asc;
