-- A device's open commands, without reading every command it was ever
-- sent: counted at each new command (the per-device limit) and read when it
-- connects. The predicate is store.openStatuses, word for word.
CREATE INDEX commands_device_open ON commands (device, id) WHERE status IN ('queued', 'sent', 'delivered');
