-- A requested order's tie-break (seq) now runs in the direction of its last field, so
-- the index (tenant_id, field, seq) serves an order both ways, forwards for ascending
-- and backwards for descending. The second index each of these fields had (for
-- "field ascending, seq descending") only cost every insert: dropped.
DROP INDEX IF EXISTS actions_by_tenant_status_asc;
DROP INDEX IF EXISTS actions_by_tenant_type_asc;
DROP INDEX IF EXISTS actions_by_tenant_requestor_asc;
DROP INDEX IF EXISTS actions_by_tenant_external_id_asc;
