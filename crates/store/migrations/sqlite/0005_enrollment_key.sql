-- The SHA-256 (hex) of the enrolment key a device enrolled with. A device that lost its
-- credential (or never received it) enrols again with the same key and gets a new
-- credential for the same machine. NULL for devices enrolled without a key, which
-- cannot do that.

ALTER TABLE machines ADD COLUMN enrollment_key_sha256 TEXT;
