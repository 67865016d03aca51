package sqlite

import (
	"context"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// retentionChunk is how many messages one retention step deletes. Each step
// is its own transaction, and queued messages are committed between steps,
// so retention never holds ingestion up for more than one step.
const retentionChunk = 1000

// RunRetention runs a retention pass now (it also runs every
// RetentionInterval).
func (w *Writer) RunRetention(ctx context.Context) (devices.RetentionResult, error) {
	var res devices.RetentionResult
	err := w.Run(ctx, func() (err error) { res, err = w.retain(time.Now()); return err })
	return res, err
}

// retain runs on the write loop. Time-based: for each device, the messages
// with ts before its cutoff go, with the rollups of those hours and the
// status events before it. The cutoff
// is rounded down to a whole hour, so that no rollup bucket is ever cut in
// two (nothing to rebuild), and a device is looked at again only when its
// cutoff has moved on. Size-based: while the database uses more than
// MaxDBSize, the oldest messages by arrival (lowest seq) go.
func (w *Writer) retain(now time.Time) (devices.RetentionResult, error) {
	start := time.Now()
	var res devices.RetentionResult
	ctx := context.Background()
	step := func(q string, args ...any) (int64, error) {
		t := time.Now()
		r, err := w.conn.ExecContext(ctx, q, args...)
		res.LongestStep = max(res.LongestStep, time.Since(t))
		if err != nil {
			return 0, describe(err)
		}
		n, _ := r.RowsAffected()
		w.Yield() // let waiting messages in between steps
		return n, nil
	}

	for _, d := range w.sums.All() {
		keep := w.Keep(d.Name)
		if keep <= 0 {
			continue
		}
		cutoff := floorDiv(now.UnixMilli()-keep.Milliseconds(), rollupHour) * rollupHour
		if d.TrimmedTo >= cutoff {
			continue
		}
		var deleted int64
		for {
			n, err := step(`DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE device_id = ? AND ts < ? LIMIT ?)`, d.ID, cutoff, retentionChunk)
			if err != nil {
				return res, err
			}
			deleted += n
			if n < retentionChunk {
				break
			}
		}
		if w.sums.Get(d.Name) == nil {
			continue // deleted between steps
		}
		for k := range w.roll.deltas {
			if k.device == d.ID && k.bucket < cutoff {
				delete(w.roll.deltas, k)
			}
		}
		for metric := range d.Device.Latest {
			if _, err := step(`DELETE FROM rollups WHERE device_id = ? AND metric = ? AND res IN (?, ?) AND bucket < ?`, d.ID, metric, rollupMinute, rollupHour, cutoff); err != nil {
				return res, err
			}
		}
		if _, err := step(`DELETE FROM device_events WHERE device_id = ? AND at < ?`, d.ID, cutoff); err != nil {
			return res, err
		}
		d.TrimmedTo = cutoff
		if deleted > 0 {
			res.Deleted += deleted
			res.Devices++
			w.sums.Update(d, func(dv *devices.Device) { dv.MessageCount = max(dv.MessageCount-deleted, 0) })
		}
	}

	if w.MaxDBSize > 0 {
		n, err := w.trimToSize(ctx, &res)
		res.Deleted += n
		res.BySize = n
		if err != nil {
			return res, err
		}
	}
	res.Took = time.Since(start)
	return res, nil
}

// maxSizeSteps bounds one pass of size-based deletion; the next pass goes on.
const maxSizeSteps = 200

// trimToSize deletes the oldest messages while the database uses more than
// MaxDBSize, down to 90% of it.
func (w *Writer) trimToSize(ctx context.Context, res *devices.RetentionResult) (int64, error) {
	used, err := w.usedBytes(ctx)
	if err != nil || used <= w.MaxDBSize {
		return 0, err
	}
	target := w.MaxDBSize / 10 * 9
	byID := make(map[int64]*store.Summary)
	for _, d := range w.sums.All() {
		byID[d.ID] = d
	}
	var total int64
	for i := 0; i < maxSizeSteps && used > target; i++ {
		t := time.Now()
		rows, err := w.conn.QueryContext(ctx, `DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?) RETURNING device_id`, retentionChunk)
		if err != nil {
			return total, describe(err)
		}
		counts := map[int64]int64{}
		var n int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return total, err
			}
			counts[id]++
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, describe(err)
		}
		res.LongestStep = max(res.LongestStep, time.Since(t))
		for id, c := range counts {
			if d := byID[id]; d != nil {
				w.sums.Update(d, func(dv *devices.Device) { dv.MessageCount = max(dv.MessageCount-c, 0) })
			}
		}
		total += n
		if n == 0 {
			break
		}
		w.Yield() // let waiting messages in between steps
		if used, err = w.usedBytes(ctx); err != nil {
			return total, err
		}
	}
	if total > 0 && used > target {
		w.Logger.Warn("database still over --max-db-size after deleting the oldest messages; the rest is rollups, device data and free pages", "used_bytes", used, "max_bytes", w.MaxDBSize)
	}
	return total, nil
}

// usedBytes is the database's size less its free pages (which SQLite reuses
// before growing the file).
func (w *Writer) usedBytes(ctx context.Context) (int64, error) {
	var pages, free, size int64
	for _, p := range []struct {
		q   string
		dst *int64
	}{{`PRAGMA page_count`, &pages}, {`PRAGMA freelist_count`, &free}, {`PRAGMA page_size`, &size}} {
		if err := w.conn.QueryRowContext(ctx, p.q).Scan(p.dst); err != nil {
			return 0, describe(err)
		}
	}
	return (pages - free) * size, nil
}
