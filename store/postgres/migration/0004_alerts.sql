-- Alert rules, the alerts they raise with every change, the evaluator's
-- per-(rule, device) state, and webhook deliveries (an outbox: a delivery
-- is written in the transaction that changes its alert). See devices.Alert.
CREATE TABLE alert_rules (
	id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name    text    NOT NULL UNIQUE,
	source  text    NOT NULL, -- api or file
	spec    text    NOT NULL, -- the rule as JSON
	created bigint NOT NULL, -- Unix ms
	updated bigint NOT NULL
);
CREATE TABLE alerts (
	id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	rule_id     bigint NOT NULL,
	rule        text    NOT NULL,
	kind        text    NOT NULL,
	device      text    NOT NULL,
	severity    text    NOT NULL,
	status      text    NOT NULL,
	message     text    NOT NULL,
	metric      text    NOT NULL DEFAULT '',
	first_value double precision,
	first_at    bigint NOT NULL,
	last_value  double precision,
	last_at     bigint NOT NULL,
	count       bigint NOT NULL,
	created     bigint NOT NULL,
	updated     bigint NOT NULL,
	acked_by    text    NOT NULL DEFAULT '',
	acked_at    bigint NOT NULL DEFAULT 0,
	ack_note    text    NOT NULL DEFAULT '',
	cleared_by  text    NOT NULL DEFAULT '',
	cleared_at  bigint NOT NULL DEFAULT 0
);
-- One open alert per (rule, device).
CREATE UNIQUE INDEX alerts_open ON alerts (rule_id, device) WHERE status <> 'cleared';
CREATE INDEX alerts_device ON alerts (device, id);
CREATE TABLE alert_events (
	id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	alert_id bigint NOT NULL,
	at       bigint NOT NULL,
	status   text    NOT NULL,
	actor    text    NOT NULL DEFAULT '',
	note     text    NOT NULL DEFAULT '',
	value    double precision
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, id);
CREATE TABLE alert_states (
	rule_id bigint NOT NULL,
	device  text    NOT NULL,
	since   bigint NOT NULL,
	value   double precision,
	win     bigint NOT NULL,
	count   bigint NOT NULL,
	PRIMARY KEY (rule_id, device)
);
CREATE TABLE alert_deliveries (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	alert_id   bigint NOT NULL,
	event      text    NOT NULL,
	url        text    NOT NULL,
	key        text    NOT NULL,
	status     text    NOT NULL,
	attempts   bigint NOT NULL DEFAULT 0,
	next_at    bigint NOT NULL,
	created    bigint NOT NULL,
	updated    bigint NOT NULL,
	last_error text    NOT NULL DEFAULT '',
	payload    text    NOT NULL
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id, id);
CREATE TABLE alert_attempts (
	id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	delivery_id bigint NOT NULL,
	at          bigint NOT NULL,
	code        bigint NOT NULL,
	error       text    NOT NULL DEFAULT '',
	ms          bigint NOT NULL
);
CREATE INDEX alert_attempts_delivery ON alert_attempts (delivery_id, id);

-- Small named values of the hub: the evaluator's position, the webhook
-- signing secret.
CREATE TABLE hub_settings (
	name  text PRIMARY KEY,
	value text NOT NULL
);
