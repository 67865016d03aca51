-- Per-device retention, overriding --retention. Keyed by device name so
-- that it outlives a device being deleted and created again.
CREATE TABLE retention_overrides (
	device    TEXT    PRIMARY KEY,
	retention INTEGER NOT NULL -- ms; 0 keeps everything
);
