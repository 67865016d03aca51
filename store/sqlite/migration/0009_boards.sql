-- Boards: dashboards users compose, stored as the JSON they were given.
CREATE TABLE boards (
	id      INTEGER PRIMARY KEY,
	name    TEXT    NOT NULL UNIQUE,
	spec    TEXT    NOT NULL, -- {"window":...,"panels":[...]}
	created INTEGER NOT NULL, -- Unix ms
	updated INTEGER NOT NULL
);
