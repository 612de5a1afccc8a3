-- An action's last update is never before its creation: the query derives
-- `created < X` from `lastUpdateDateTimeUtc lt X` so the default-order index starts at
-- X. Status changes keep it so (`GREATEST(at, created)`); rows written before that
-- (only with a clock set back) are brought in line here.
UPDATE actions SET last_update = created WHERE last_update < created;
