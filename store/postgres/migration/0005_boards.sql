-- Boards: dashboards users compose, stored as the JSON they were given.
CREATE TABLE boards (
	id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name    text   NOT NULL UNIQUE,
	spec    text   NOT NULL, -- {"window":...,"panels":[...]}
	created bigint NOT NULL, -- Unix ms
	updated bigint NOT NULL
);
