-- Alert rules, the alerts they raise with every change, the evaluator's
-- per-(rule, device) state, and webhook deliveries (an outbox: a delivery
-- is written in the transaction that changes its alert). See devices.Alert.
CREATE TABLE alert_rules (
	id      INTEGER PRIMARY KEY,
	name    TEXT    NOT NULL UNIQUE,
	source  TEXT    NOT NULL, -- api or file
	spec    TEXT    NOT NULL, -- the rule as JSON
	created INTEGER NOT NULL, -- Unix ms
	updated INTEGER NOT NULL
);
CREATE TABLE alerts (
	id          INTEGER PRIMARY KEY,
	rule_id     INTEGER NOT NULL,
	rule        TEXT    NOT NULL,
	kind        TEXT    NOT NULL,
	device      TEXT    NOT NULL,
	severity    TEXT    NOT NULL,
	status      TEXT    NOT NULL,
	message     TEXT    NOT NULL,
	metric      TEXT    NOT NULL DEFAULT '',
	first_value REAL,
	first_at    INTEGER NOT NULL,
	last_value  REAL,
	last_at     INTEGER NOT NULL,
	count       INTEGER NOT NULL,
	created     INTEGER NOT NULL,
	updated     INTEGER NOT NULL,
	acked_by    TEXT    NOT NULL DEFAULT '',
	acked_at    INTEGER NOT NULL DEFAULT 0,
	ack_note    TEXT    NOT NULL DEFAULT '',
	cleared_by  TEXT    NOT NULL DEFAULT '',
	cleared_at  INTEGER NOT NULL DEFAULT 0
);
-- One open alert per (rule, device).
CREATE UNIQUE INDEX alerts_open ON alerts (rule_id, device) WHERE status <> 'cleared';
CREATE INDEX alerts_device ON alerts (device, id);
CREATE TABLE alert_events (
	id       INTEGER PRIMARY KEY,
	alert_id INTEGER NOT NULL,
	at       INTEGER NOT NULL,
	status   TEXT    NOT NULL,
	actor    TEXT    NOT NULL DEFAULT '',
	note     TEXT    NOT NULL DEFAULT '',
	value    REAL
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, id);
CREATE TABLE alert_states (
	rule_id INTEGER NOT NULL,
	device  TEXT    NOT NULL,
	since   INTEGER NOT NULL,
	value   REAL,
	win     INTEGER NOT NULL,
	count   INTEGER NOT NULL,
	PRIMARY KEY (rule_id, device)
) WITHOUT ROWID;
CREATE TABLE alert_deliveries (
	id         INTEGER PRIMARY KEY,
	alert_id   INTEGER NOT NULL,
	event      TEXT    NOT NULL,
	url        TEXT    NOT NULL,
	key        TEXT    NOT NULL,
	status     TEXT    NOT NULL,
	attempts   INTEGER NOT NULL DEFAULT 0,
	next_at    INTEGER NOT NULL,
	created    INTEGER NOT NULL,
	updated    INTEGER NOT NULL,
	last_error TEXT    NOT NULL DEFAULT '',
	payload    TEXT    NOT NULL
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id, id);
CREATE TABLE alert_attempts (
	id          INTEGER PRIMARY KEY,
	delivery_id INTEGER NOT NULL,
	at          INTEGER NOT NULL,
	code        INTEGER NOT NULL,
	error       TEXT    NOT NULL DEFAULT '',
	ms          INTEGER NOT NULL
);
CREATE INDEX alert_attempts_delivery ON alert_attempts (delivery_id, id);

-- Small named values of the hub: the evaluator's position, the webhook
-- signing secret.
CREATE TABLE hub_settings (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
