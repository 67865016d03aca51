-- Telehub schema, version 1.
-- Times are UTC Unix milliseconds. messages.seq is the message's sequence number.

-- One row per device. The writer keeps these summaries in memory and saves
-- them in rounds (see store.Writer); meta.summary_seq says up to which
-- message every row is complete, and later messages are folded in again at
-- start, so a crash loses nothing.
CREATE TABLE devices (
	id            INTEGER PRIMARY KEY,
	name          TEXT    NOT NULL UNIQUE,
	first_seen    INTEGER NOT NULL,
	last_seen     INTEGER NOT NULL,
	message_count INTEGER NOT NULL DEFAULT 0,
	last_seq      INTEGER NOT NULL DEFAULT 0,
	status        TEXT    NOT NULL DEFAULT '',
	status_at     INTEGER NOT NULL DEFAULT 0,
	latest        TEXT    NOT NULL DEFAULT '{}' -- {"metric":{"v":<json>,"ts":ms,"seq":n}}
);

CREATE TABLE messages (
	seq       INTEGER PRIMARY KEY,
	device_id INTEGER NOT NULL REFERENCES devices (id),
	ts        INTEGER NOT NULL, -- device time, or received when the payload had none
	received  INTEGER NOT NULL,
	topic     TEXT    NOT NULL,
	kind      INTEGER NOT NULL, -- devices.Kind: 1 telemetry, 2 status
	qos       INTEGER NOT NULL,
	flags     INTEGER NOT NULL, -- devices.Flags
	payload   BLOB    NOT NULL
);

-- History by device time (ts), ties broken by seq (the rowid, implicit in the index).
CREATE INDEX messages_device_ts ON messages (device_id, ts);
-- There is no (device_id, seq) index: replaying one device by seq reads its
-- seqs from messages_device_ts, whose entries end with seq (store.replayFar).

-- Small durable counters: last_seq, the highest sequence number ever
-- assigned (it must survive deleting the newest rows), and summary_seq.
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;
