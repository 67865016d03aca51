-- Commands to devices (RPC), with their answers, and every status change.
-- Kept by device name, like retention overrides. See devices.Command.
CREATE TABLE commands (
	id       INTEGER PRIMARY KEY,
	device   TEXT    NOT NULL,
	method   TEXT    NOT NULL,
	params   TEXT    NOT NULL, -- JSON
	oneway   INTEGER NOT NULL, -- 0 or 1
	status   TEXT    NOT NULL,
	created  INTEGER NOT NULL, -- Unix ms
	expires  INTEGER NOT NULL,
	updated  INTEGER NOT NULL,
	response TEXT,             -- JSON, NULL until answered
	error    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX commands_device ON commands (device, id);
CREATE INDEX commands_open ON commands (expires) WHERE status IN ('queued', 'sent', 'delivered');
CREATE TABLE command_events (
	id         INTEGER PRIMARY KEY,
	command_id INTEGER NOT NULL,
	at         INTEGER NOT NULL,
	status     TEXT    NOT NULL,
	note       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX command_events_command ON command_events (command_id, at);

-- Device attributes (the twin): shared ones the server sets, client ones
-- the device reports; JSON values, each with the time it was last set.
CREATE TABLE attributes (
	device TEXT    NOT NULL,
	scope  TEXT    NOT NULL CHECK (scope IN ('shared', 'client')),
	key    TEXT    NOT NULL,
	value  TEXT    NOT NULL,
	ts     INTEGER NOT NULL,
	PRIMARY KEY (device, scope, key)
) WITHOUT ROWID;

-- Every change of a device's attributes: what changed (deleted keys as
-- null), newest last.
CREATE TABLE attribute_events (
	id      INTEGER PRIMARY KEY,
	device  TEXT    NOT NULL,
	scope   TEXT    NOT NULL,
	at      INTEGER NOT NULL,
	changes TEXT    NOT NULL -- JSON object
);
CREATE INDEX attribute_events_device ON attribute_events (device, id);
