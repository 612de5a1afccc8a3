-- Query plans at a million actions that the bounded statistics (`PRAGMA optimize` with
-- `analysis_limit`) do not get right by themselves.
--
-- 1. `requestor eq` in the default order: the index leads with the requestor and then
--    follows the default order, so one requestor's newest actions are a range read in
--    order, however rare the requestor. It ends with the status, so "one application's
--    actions with a status" (what actions_by_tenant_requestor_status served) checks the
--    status in the index while reading in order. It replaces that index: no more
--    indexes than before.
-- 2. `externalId eq`: most actions have no external id; a partial index without them
--    has statistics of its own that show an equality is selective (the full index's
--    sampled statistics average the NULL group in). The query adds
--    `external_id IS NOT NULL` to an equality so this index is seen as usable.
-- 3. An action's last update is never before its creation: the query derives
--    `created < X` from `lastUpdateDateTimeUtc lt X` so the default-order index starts
--    at X. Status changes keep it so (`MAX(at, created)`); rows written before that
--    (only with a clock set back) are brought in line here.
DROP INDEX actions_by_tenant_requestor_status;
CREATE INDEX actions_by_tenant_requestor_created
    ON actions(tenant_id, requestor COLLATE NOCASE, created DESC, seq DESC, status);
CREATE INDEX actions_by_tenant_external_id_set ON actions(tenant_id, external_id)
    WHERE external_id IS NOT NULL;
UPDATE actions SET last_update = created WHERE last_update < created;
