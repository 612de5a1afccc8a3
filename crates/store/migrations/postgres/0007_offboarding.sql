-- Offboarding (MDE's POST /api/machines/{id}/offboard). A machine is offboarded when its
-- offboard action ends Succeeded, Failed or TimeOut: from then on its credential is
-- refused and it takes no more actions. Never undone.
--
-- Numbered 0007 on purpose: 0006 belongs to another change. The migrator applies
-- whatever it has not applied yet, in version order, so a gap (or 0006 arriving later)
-- is fine.

-- When the machine was offboarded (100-ns ticks); NULL while it is onboarded.
ALTER TABLE machines ADD COLUMN offboarded BIGINT;

-- The duplicate rule for offboarding: at most one open offboard action per device,
-- enforced by the database so that it holds under any concurrency.
CREATE UNIQUE INDEX actions_one_open_offboard ON actions(machine_id)
    WHERE status IN ('Pending', 'InProgress') AND action_type = 'Offboard';
