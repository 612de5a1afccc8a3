-- The creation of an action is recorded in the audit trail by the database itself, in
-- the same statement as the insert: one autocommit statement (one round trip, one
-- fsync) instead of BEGIN, two inserts and COMMIT.
CREATE TRIGGER actions_audit_creation AFTER INSERT ON actions
BEGIN
    INSERT INTO action_audit (action_id, at, actor, from_status, to_status, reason)
    VALUES (NEW.id, NEW.created, NEW.requestor, NULL, NEW.status, NULL);
END;
