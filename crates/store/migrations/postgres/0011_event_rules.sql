-- What decided a denial event, when a file indicator did: the rule ('blocked',
-- 'audited'), the indicator's id, and whether it asked for an alert (generateAlert).
ALTER TABLE denial_events ADD COLUMN rule TEXT;
ALTER TABLE denial_events ADD COLUMN indicator_id TEXT;
ALTER TABLE denial_events ADD COLUMN alert BOOLEAN NOT NULL DEFAULT FALSE;

DROP VIEW machine_events;
CREATE VIEW machine_events AS
SELECT e.seq, e.tenant_id, e.machine_id, m.computer_dns_name, m.rbac_group_id,
       e.time, e.path, e.sha256, e.pid, e.uid, e.parent, e.kind, e.monitor,
       e.rule, e.indicator_id, e.alert
FROM denial_events e JOIN machines m ON m.id = e.machine_id;
