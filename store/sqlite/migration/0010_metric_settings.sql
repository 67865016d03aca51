-- How each metric is shown (label, unit, decimals, axis range), as JSON.
CREATE TABLE metric_settings (
	metric  TEXT    PRIMARY KEY,
	spec    TEXT    NOT NULL, -- {"label":...,"unit":...,"decimals":...,"min":...,"max":...}
	updated INTEGER NOT NULL  -- Unix ms
);
