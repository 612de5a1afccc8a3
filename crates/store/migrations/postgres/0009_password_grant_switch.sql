-- Whether the tenant's token endpoints accept grant_type=password (RFC 9700 deprecates
-- it). Tenants that exist already keep it (their scripts go on working); the server
-- creates new tenants with it off, and `serve --demo` turns it on for its tenant.
ALTER TABLE tenants ADD COLUMN password_grant BOOLEAN NOT NULL DEFAULT TRUE;
