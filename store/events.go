package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/telehub/telehub/devices"
)

// Events reads the status events both backends record (devices.EventLog),
// in SQL that both run as it is.
type Events struct {
	ReadDB *Stmts
}

// StatusEvents implements devices.EventLog.
func (e *Events) StatusEvents(ctx context.Context, device string, limit int) ([]devices.StatusEvent, error) {
	var id int64
	err := e.ReadDB.QueryRowContext(ctx, `SELECT id FROM devices WHERE name = $1`, device).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("device %q: %w", device, devices.ErrNotFound)
	} else if err != nil {
		return nil, err
	}
	rows, err := e.ReadDB.QueryContext(ctx, `SELECT at, status, reason FROM device_events WHERE device_id = $1 ORDER BY at DESC, id DESC LIMIT $2`, id, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []devices.StatusEvent{}
	for rows.Next() {
		ev := devices.StatusEvent{Device: device}
		if err := rows.Scan(&ev.At, &ev.Status, &ev.Reason); err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, rows.Err()
}

// StaleOnline implements devices.EventLog: the devices whose status is
// "online" because the hub saw them connect (their latest status event set
// it), for a hub that just started.
func (e *Events) StaleOnline(ctx context.Context) ([]string, error) {
	rows, err := e.ReadDB.QueryContext(ctx, `SELECT d.name FROM devices d
		WHERE d.status = 'online' AND EXISTS (
			SELECT 1 FROM device_events e WHERE e.device_id = d.id AND e.at = d.status_at AND e.status = 'online')
		ORDER BY d.name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, rows.Err()
}
