-- Commands to devices (RPC), with their answers, and every status change.
-- Kept by device name, like retention overrides. See devices.Command.
CREATE TABLE commands (
	id       bigint   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device   text     NOT NULL,
	method   text     NOT NULL,
	params   text     NOT NULL, -- JSON
	oneway   smallint NOT NULL, -- 0 or 1
	status   text     NOT NULL,
	created  bigint   NOT NULL, -- Unix ms
	expires  bigint   NOT NULL,
	updated  bigint   NOT NULL,
	response text,              -- JSON, NULL until answered
	error    text     NOT NULL DEFAULT ''
);
CREATE INDEX commands_device ON commands (device, id);
CREATE INDEX commands_open ON commands (expires) WHERE status IN ('queued', 'sent', 'delivered');
CREATE TABLE command_events (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	command_id bigint NOT NULL,
	at         bigint NOT NULL,
	status     text   NOT NULL,
	note       text   NOT NULL DEFAULT ''
);
CREATE INDEX command_events_command ON command_events (command_id, at);

-- Device attributes (the twin): shared ones the server sets, client ones
-- the device reports; JSON values, each with the time it was last set.
CREATE TABLE attributes (
	device text   NOT NULL,
	scope  text   NOT NULL CHECK (scope IN ('shared', 'client')),
	key    text   NOT NULL,
	value  text   NOT NULL,
	ts     bigint NOT NULL,
	PRIMARY KEY (device, scope, key)
);

-- Every change of a device's attributes: what changed (deleted keys as
-- null), newest last.
CREATE TABLE attribute_events (
	id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device  text   NOT NULL,
	scope   text   NOT NULL,
	at      bigint NOT NULL,
	changes text   NOT NULL -- JSON object
);
CREATE INDEX attribute_events_device ON attribute_events (device, id);
