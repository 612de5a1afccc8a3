-- Whether the tenant's token endpoints accept grant_type=password (RFC 9700 deprecates
-- it). Tenants that exist already keep it (their scripts go on working); the server
-- creates new tenants with it off, and `serve --demo` turns it on for its tenant.
ALTER TABLE tenants ADD COLUMN password_grant INTEGER NOT NULL DEFAULT 1;

-- Device codes: the polling interval the client must keep, in seconds (NULL: the
-- server's default); each `slow_down` adds 5 s for all later polls (RFC 8628 §3.5).
ALTER TABLE oauth_grants ADD COLUMN poll_interval INTEGER;
