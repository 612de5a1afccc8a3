-- Indicators scoped to device groups (MDE's rbacGroupNames): the names as submitted and
-- the rbacGroupIds devices are matched on, as JSON lists; empty: every device.
ALTER TABLE indicators ADD COLUMN rbac_group_names TEXT NOT NULL DEFAULT '[]';
ALTER TABLE indicators ADD COLUMN rbac_group_ids TEXT NOT NULL DEFAULT '[]';
