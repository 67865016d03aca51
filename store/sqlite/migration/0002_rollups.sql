-- Rollups: per device and metric, the numeric readings of each minute
-- (res 60000) and each hour (res 3600000), aggregated. The writer builds
-- them from the messages in seq order; meta.rollup_seq says up to which
-- message they are complete (updated in the same transaction), so series
-- read rollups up to it and raw messages after it.
CREATE TABLE rollups (
	device_id INTEGER NOT NULL,
	metric    TEXT    NOT NULL,
	res       INTEGER NOT NULL, -- bucket width, ms
	bucket    INTEGER NOT NULL, -- bucket start, Unix ms, aligned to res
	count     INTEGER NOT NULL,
	sum       REAL    NOT NULL,
	min       REAL    NOT NULL,
	max       REAL    NOT NULL,
	first_ts  INTEGER NOT NULL,
	first     REAL    NOT NULL,
	last_ts   INTEGER NOT NULL,
	last      REAL    NOT NULL,
	PRIMARY KEY (device_id, metric, res, bucket)
) WITHOUT ROWID;
