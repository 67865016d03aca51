package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// deleteChunk is how many rows one delete statement removes; queued
// messages are committed between chunks (Pipeline.Yield).
const deleteChunk = 5000

// latestRebuildRows is how many of a device's newest remaining messages
// rebuild its latest values after a range of its messages was deleted.
const latestRebuildRows = 1000

// SetStatus implements devices.StatusRecorder: on the write loop, it sets
// the device's status (creating the device if the hub never stored a
// message of it) and appends the event to its log, then hands it to
// OnStatus.
func (w *Writer) SetStatus(ctx context.Context, ev devices.StatusEvent) error {
	if err := devices.ValidateDeviceID(ev.Device); err != nil {
		return err
	}
	return w.Run(ctx, func() error {
		var d *store.Summary
		created := false
		err := pgx.BeginFunc(ctx, w.DB.Pool, func(tx pgx.Tx) (err error) {
			if d, created, err = w.device(ctx, tx, ev.Device, ev.At); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO device_events (device_id, at, status, reason) VALUES ($1, $2, $3, $4)`, d.ID, ev.At, ev.Status, ev.Reason); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE devices SET status = $1, status_at = $2 WHERE id = $3`, ev.Status, ev.At, d.ID)
			return err
		})
		if err != nil {
			if created { // its row was rolled back
				w.sums.Remove(ev.Device)
			}
			return err
		}
		w.sums.Update(d, func(dv *devices.Device) { dv.Status, dv.StatusAt = ev.Status, ev.At })
		if w.OnStatus != nil {
			w.OnStatus(ev)
		}
		return nil
	})
}

// DeleteMessages implements devices.DataDeleter: a device's messages with
// from <= ts <= to go, a chunk at a time; its count drops and its latest
// values are rebuilt from its newest remaining messages.
func (w *Writer) DeleteMessages(ctx context.Context, device string, from, to int64) (int64, error) {
	if from > to {
		return 0, fmt.Errorf("%w: from is after to", devices.ErrInvalid)
	}
	var n int64
	err := w.Run(ctx, func() (err error) {
		d := w.sums.Get(device)
		if d == nil {
			return fmt.Errorf("device %q: %w", device, devices.ErrNotFound)
		}
		if n, err = w.deleteRange(ctx, d.ID, from, to); err != nil {
			return err
		}
		return w.rebuildAfterDelete(ctx, d, n)
	})
	return n, err
}

// DeleteDevice implements devices.DataDeleter.
func (w *Writer) DeleteDevice(ctx context.Context, device string) (int64, error) {
	var n int64
	err := w.Run(ctx, func() (err error) {
		d := w.sums.Get(device)
		if d == nil {
			return fmt.Errorf("device %q: %w", device, devices.ErrNotFound)
		}
		from, to := devices.AllTime()
		if n, err = w.deleteRange(ctx, d.ID, from, to); err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, w.DB.Pool, func(tx pgx.Tx) error {
			for _, q := range []string{`DELETE FROM messages WHERE device_id = $1`, `DELETE FROM device_events WHERE device_id = $1`, `DELETE FROM devices WHERE id = $1`} {
				if _, err := tx.Exec(ctx, q, d.ID); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		w.sums.Remove(device)
		w.ForgetNames(device)
		return nil
	})
	return n, err
}

// deleteRange deletes a device's messages with from <= ts <= to, in chunks,
// letting queued messages in between.
func (w *Writer) deleteRange(ctx context.Context, id, from, to int64) (int64, error) {
	var total int64
	for {
		tag, err := w.DB.Pool.Exec(ctx, `DELETE FROM messages WHERE seq IN (
			SELECT seq FROM messages WHERE device_id = $1 AND ts >= $2 AND ts <= $3 LIMIT $4)`, id, from, to, deleteChunk)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < deleteChunk {
			return total, nil
		}
		w.Yield()
	}
}

// rebuildAfterDelete corrects a device's count and rebuilds its latest
// values from its newest remaining messages.
func (w *Writer) rebuildAfterDelete(ctx context.Context, d *store.Summary, deleted int64) error {
	var recent []devices.Message
	err := scanMessages(ctx, w.DB.Pool, `SELECT seq, device_id, ts, received, kind, flags, payload FROM messages WHERE device_id = $1 ORDER BY ts DESC, seq DESC LIMIT $2`,
		[]any{d.ID, latestRebuildRows}, func(_ int64, m *devices.Message) { recent = append(recent, *m) })
	if err != nil {
		return err
	}
	latest := store.LatestFrom(recent)
	w.sums.Update(d, func(dv *devices.Device) {
		dv.MessageCount = max(dv.MessageCount-deleted, 0)
		dv.Latest = latest
	})
	return w.saveSummaries(ctx)
}

// RunRetention implements devices.RetentionService.
func (w *Writer) RunRetention(ctx context.Context) (devices.RetentionResult, error) {
	var res devices.RetentionResult
	err := w.Run(ctx, func() (err error) { res, err = w.retain(ctx, time.Now()); return err })
	return res, err
}

// retain runs on the write loop: for each device, the messages with ts
// before its cutoff (rounded down to a whole hour, like SQLite's) go, with
// the status events before it.
func (w *Writer) retain(ctx context.Context, now time.Time) (devices.RetentionResult, error) {
	start := time.Now()
	var res devices.RetentionResult
	for _, d := range w.sums.All() {
		keep := w.Keep(d.Name)
		if keep <= 0 {
			continue
		}
		cutoff := devices.FloorDiv(now.UnixMilli()-keep.Milliseconds(), 3_600_000) * 3_600_000
		if d.TrimmedTo >= cutoff {
			continue
		}
		t := time.Now()
		n, err := w.deleteRange(ctx, d.ID, devices.MinTime, cutoff-1)
		res.LongestStep = max(res.LongestStep, time.Since(t))
		if err != nil {
			return res, err
		}
		if w.sums.Get(d.Name) == nil {
			continue // deleted between steps
		}
		if _, err := w.DB.Pool.Exec(ctx, `DELETE FROM device_events WHERE device_id = $1 AND at < $2`, d.ID, cutoff); err != nil {
			return res, err
		}
		d.TrimmedTo = cutoff
		if n > 0 {
			res.Deleted += n
			res.Devices++
			w.sums.Update(d, func(dv *devices.Device) { dv.MessageCount = max(dv.MessageCount-n, 0) })
		}
	}
	res.Took = time.Since(start)
	return res, nil
}
