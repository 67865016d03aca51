-- One row per commit of messages, written in that commit: when the answer
-- to a COMMIT is lost with the connection, the writer looks its token up
-- before trying again, so that a batch that did commit is not stored a
-- second time. The leader deletes rows older than an hour.
CREATE TABLE commit_tokens (
	token bigint PRIMARY KEY,
	lo    bigint NOT NULL, -- the batch's first seq
	at    bigint NOT NULL  -- Unix ms
);
CREATE INDEX commit_tokens_at ON commit_tokens (at);
