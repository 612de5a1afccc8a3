-- Alerts (MDE's alert resource) raised from what agents report. `created` is unique per
-- tenant and grows in commit order (the writer assigns max(now, newest + 1 tick)), so a
-- poller paging with `alertCreationTime gt <last seen>` never misses or repeats one.
-- Evidence, comments and MITRE techniques are JSON text.
CREATE TABLE alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    detector_id TEXT NOT NULL,
    group_key TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    detection_source TEXT NOT NULL,
    threat_name TEXT,
    mitre_techniques TEXT NOT NULL,
    status TEXT NOT NULL,
    classification TEXT,
    determination TEXT,
    assigned_to TEXT,
    created INTEGER NOT NULL,
    first_event INTEGER NOT NULL,
    last_event INTEGER NOT NULL,
    last_update INTEGER NOT NULL,
    resolved INTEGER,
    event_count INTEGER NOT NULL,
    related_user TEXT,
    comments TEXT NOT NULL DEFAULT '[]',
    evidence TEXT NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX alerts_tenant_created ON alerts (tenant_id, created);
CREATE INDEX alerts_tenant_last_update ON alerts (tenant_id, last_update);
CREATE INDEX alerts_group ON alerts (machine_id, detector_id, group_key);
CREATE INDEX alerts_last_update ON alerts (last_update);

CREATE VIEW alert_rows AS
SELECT a.seq, a.id, a.tenant_id, a.machine_id, m.computer_dns_name, m.rbac_group_id,
       m.rbac_group_name, a.detector_id, a.title, a.description, a.category, a.severity,
       a.detection_source, a.threat_name, a.mitre_techniques, a.status, a.classification,
       a.determination, a.assigned_to, a.created, a.first_event, a.last_event,
       a.last_update, a.resolved, a.event_count, a.related_user, a.comments, a.evidence
FROM alerts a JOIN machines m ON m.id = a.machine_id;
