-- Rollups are written a few hundred buckets at a time instead of all at
-- once (a stall of tens of ms for a fleet). upto_seq says up to which
-- message a row is complete; meta.rollup_seq stays the seq up to which
-- every row is, and a series adds a raw message above it to a bucket only
-- when the message is above the bucket's upto_seq. Rows written before
-- have 0: complete up to rollup_seq.
ALTER TABLE rollups ADD COLUMN upto_seq INTEGER NOT NULL DEFAULT 0;
