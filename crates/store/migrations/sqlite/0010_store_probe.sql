-- One row the readiness probe rewrites: a write that must reach the disk, so that a
-- full or read-only disk shows as "not ready".
CREATE TABLE store_probe (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    checked INTEGER NOT NULL
);
INSERT INTO store_probe (id, checked) VALUES (1, 0);
