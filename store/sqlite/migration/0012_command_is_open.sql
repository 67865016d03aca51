-- is_open marks the commands that are not finished (store.openCommand),
-- and the indexes of open commands follow it instead of status: a command
-- going from queued to sent to delivered then changes no index entry (each
-- such change cost two index rewrites, most of a status change's write);
-- only its end does.
ALTER TABLE commands ADD COLUMN is_open INTEGER NOT NULL DEFAULT 0;
UPDATE commands SET is_open = 1 WHERE status IN ('queued', 'sent', 'delivered') AND (status <> 'delivered' OR oneway = 0);
DROP INDEX commands_open;
DROP INDEX commands_device_open;
CREATE INDEX commands_open ON commands (expires) WHERE is_open = 1;
CREATE INDEX commands_device_open ON commands (device, id) WHERE is_open = 1;
