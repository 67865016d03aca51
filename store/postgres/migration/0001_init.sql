-- Telehub schema on PostgreSQL, version 1. Times are UTC Unix milliseconds,
-- as on SQLite, so that both backends answer alike.

-- Small durable counters. last_seq is the highest sequence number ever
-- assigned: every commit of messages takes its range from this row with
-- UPDATE ... RETURNING inside its own transaction, so the row lock orders
-- committers and numbers are dense and visible in commit order (a reader
-- following seq > last never meets a gap that fills later). summary_seq
-- says up to which message the devices rows are complete.
CREATE TABLE meta (
	key   text PRIMARY KEY,
	value bigint NOT NULL
);
INSERT INTO meta (key, value) VALUES ('last_seq', 0), ('summary_seq', 0);

-- One row per device; the writer keeps the summaries in memory and saves
-- them every FlushInterval.
CREATE TABLE devices (
	id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name          text   NOT NULL UNIQUE,
	first_seen    bigint NOT NULL,
	last_seen     bigint NOT NULL,
	message_count bigint NOT NULL DEFAULT 0,
	last_seq      bigint NOT NULL DEFAULT 0,
	status        text   NOT NULL DEFAULT '',
	status_at     bigint NOT NULL DEFAULT 0,
	latest        text   NOT NULL DEFAULT '{}' -- {"metric":{"v":<json>,"ts":ms,"seq":n}}
);

CREATE TABLE messages (
	seq       bigint   PRIMARY KEY,
	device_id bigint   NOT NULL,
	ts        bigint   NOT NULL, -- device time, or received when the payload had none
	received  bigint   NOT NULL,
	topic     text     NOT NULL,
	kind      smallint NOT NULL, -- devices.Kind: 1 telemetry, 2 status
	qos       smallint NOT NULL,
	flags     integer  NOT NULL, -- devices.Flags
	payload   bytea    NOT NULL
);
-- History by device time, ties broken by seq; a device's replay by seq.
CREATE INDEX messages_device_ts ON messages (device_id, ts, seq);
CREATE INDEX messages_device_seq ON messages (device_id, seq);
-- Arrival time grows with seq: a BRIN index finds a receive-time window
-- for a few pages of index.
CREATE INDEX messages_received ON messages USING brin (received);

-- Only the SHA-256 of each token is stored (see the SQLite schema).
CREATE TABLE device_credentials (
	device     text   PRIMARY KEY,
	token_hash bytea  NOT NULL UNIQUE,
	created    bigint NOT NULL
);
CREATE TABLE api_tokens (
	name       text   PRIMARY KEY,
	token_hash bytea  NOT NULL UNIQUE,
	scope      text   NOT NULL CHECK (scope IN ('read', 'admin')),
	created    bigint NOT NULL
);

-- Per-device retention, by name, overriding --retention.
CREATE TABLE retention_overrides (
	device    text   PRIMARY KEY,
	retention bigint NOT NULL -- ms; 0 keeps everything
);

-- Status changes the hub observed (connections, silence).
CREATE TABLE device_events (
	id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device_id bigint NOT NULL,
	at        bigint NOT NULL,
	status    text   NOT NULL,
	reason    text   NOT NULL
);
CREATE INDEX device_events_device_at ON device_events (device_id, at);
