-- Which internal addresses each device had and when (from enrolment and heartbeats),
-- for MDE's find-by-IP lookups: one row per stretch of time a device reported an
-- address (a gap of more than 15 minutes starts a new stretch), kept 30 days.
CREATE TABLE machine_addresses (
    machine_id TEXT NOT NULL REFERENCES machines(id),
    tenant_id  TEXT NOT NULL,
    ip         TEXT NOT NULL,      -- canonical text form (RFC 5952 for IPv6)
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);

CREATE INDEX machine_addresses_by_ip ON machine_addresses(tenant_id, ip, last_seen);
CREATE INDEX machine_addresses_by_machine ON machine_addresses(machine_id, ip, last_seen);
CREATE INDEX machine_addresses_by_age ON machine_addresses(last_seen);
