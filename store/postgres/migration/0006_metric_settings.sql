-- How each metric is shown (label, unit, decimals, axis range), as JSON.
CREATE TABLE metric_settings (
	metric  text   PRIMARY KEY,
	spec    text   NOT NULL, -- {"label":...,"unit":...,"decimals":...,"min":...,"max":...}
	updated bigint NOT NULL  -- Unix ms
);
