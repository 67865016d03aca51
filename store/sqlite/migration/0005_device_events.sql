-- Status changes the hub observed (connections, silence), newest last. A
-- device's own status messages stay in messages.
CREATE TABLE device_events (
	id        INTEGER PRIMARY KEY,
	device_id INTEGER NOT NULL,
	at        INTEGER NOT NULL, -- Unix ms
	status    TEXT    NOT NULL,
	reason    TEXT    NOT NULL
);
CREATE INDEX device_events_device_at ON device_events (device_id, at);
