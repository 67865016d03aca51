package sqlite

import (
	"context"
	"fmt"

	"github.com/telehub/telehub/devices"
)

// SetStatus implements devices.StatusRecorder: on the write loop, it sets
// the device's status (creating the device if the hub never stored a
// message of it) and appends the event to its log, then hands it to
// OnStatus.
func (w *Writer) SetStatus(ctx context.Context, ev devices.StatusEvent) error {
	if err := devices.ValidateDeviceID(ev.Device); err != nil {
		return err
	}
	return w.Run(ctx, func() (err error) {
		tx, err := w.conn.BeginTx(ctx, nil)
		if err != nil {
			return describe(err)
		}
		defer tx.Rollback()
		d, created, err := w.device(ctx, tx, ev.Device, ev.At)
		if err != nil {
			return err
		}
		defer func() {
			if err != nil && created { // the row was rolled back
				w.sums.Remove(ev.Device)
			}
		}()
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_events (device_id, at, status, reason) VALUES (?, ?, ?, ?)`, d.ID, ev.At, ev.Status, ev.Reason); err != nil {
			return describe(err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET status = ?, status_at = ? WHERE id = ?`, ev.Status, ev.At, d.ID); err != nil {
			return describe(err)
		}
		if err := tx.Commit(); err != nil {
			return describe(err)
		}
		w.sums.Update(d, func(dv *devices.Device) { dv.Status, dv.StatusAt = ev.Status, ev.At })
		if w.OnStatus != nil {
			w.OnStatus(ev)
		}
		return nil
	})
}

// StatusEvents returns a device's latest status events, newest first.
func (s *MessageService) StatusEvents(ctx context.Context, device string, limit int) ([]devices.StatusEvent, error) {
	var id int64
	if err := s.db.read.QueryRowContext(ctx, `SELECT id FROM devices WHERE name = ?`, device).Scan(&id); err != nil {
		return nil, fmt.Errorf("device %q: %w", device, devices.ErrNotFound)
	}
	rows, err := s.db.read.QueryContext(ctx, `SELECT at, status, reason FROM device_events WHERE device_id = ? ORDER BY at DESC, id DESC LIMIT ?`, id, limit)
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

// StaleOnline returns the devices whose status is "online" because the hub
// saw them connect (their latest status event set it), for a hub that just
// started: none of those connections survived the restart.
func (s *MessageService) StaleOnline(ctx context.Context) ([]string, error) {
	rows, err := s.db.read.QueryContext(ctx, `SELECT d.name FROM devices d
		WHERE d.status = 'online' AND EXISTS (
			SELECT 1 FROM device_events e WHERE e.device_id = d.id AND e.at = d.status_at AND e.status = 'online')`)
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
