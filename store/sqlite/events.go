package sqlite

import (
	"context"

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
