-- Secrets are never stored: only the SHA-256 of each token. Tokens are 256
-- random bits, so a fast hash is enough (nothing to brute-force), and the
-- lookup is by hash, so no comparison leaks timing.
CREATE TABLE device_credentials (
	device     TEXT    PRIMARY KEY, -- the device id the token authenticates as
	token_hash BLOB    NOT NULL UNIQUE,
	created    INTEGER NOT NULL     -- Unix ms
);

CREATE TABLE api_tokens (
	name       TEXT    PRIMARY KEY,
	token_hash BLOB    NOT NULL UNIQUE,
	scope      TEXT    NOT NULL CHECK (scope IN ('read', 'admin')),
	created    INTEGER NOT NULL
);
