-- Signing keys sealed at rest. The private part of a key is stored only sealed (AEAD)
-- with a key-encryption key that lives outside the database, so a copy of the database
-- alone signs nothing. A key also has a life now: it activates (signs from then on),
-- verifies until a newer key has taken over for a token's lifetime, and is retired.
--
-- Earlier versions stored the private key in plain form. Sealing needs the
-- key-encryption key, which SQL never sees: the plain keys wait in
-- signing_keys_unsealed until the next start of the server seals them and deletes
-- them there (the store runs with secure_delete, so the deleted bytes are zeroed).

CREATE TABLE signing_keys_unsealed (
    kid         TEXT PRIMARY KEY NOT NULL,
    private_key BLOB NOT NULL
);

INSERT INTO signing_keys_unsealed (kid, private_key)
    SELECT kid, private_key FROM signing_keys;

CREATE TABLE signing_keys_sealed (
    kid                TEXT PRIMARY KEY NOT NULL,
    algorithm          TEXT NOT NULL,
    public_key         BLOB NOT NULL,
    sealed_private_key BLOB,              -- NULL once retired, or until sealed
    kek_id             TEXT,              -- the key-encryption key that sealed it
    created            INTEGER NOT NULL,
    activates          INTEGER NOT NULL,  -- signs from then on
    verify_until       INTEGER,           -- set when a newer key takes over
    retired            INTEGER
);

INSERT INTO signing_keys_sealed (kid, algorithm, public_key, created, activates)
    SELECT kid, algorithm, public_key, created, created FROM signing_keys;

DROP TABLE signing_keys;
ALTER TABLE signing_keys_sealed RENAME TO signing_keys;
