package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/telehub/telehub/devices"
)

// Rollup resolutions, ms.
const (
	rollupMinute = int64(60_000)
	rollupHour   = int64(3_600_000)
)

// rollupChunk is how many messages one catch-up read takes.
const rollupChunk = 2000

// rollupMaxDeltas writes the accumulated rollup deltas before
// Writer.RollupInterval when that many buckets changed.
const rollupMaxDeltas = 50_000

// rollupDeltaCap bounds the buckets held in memory while writing them keeps
// failing (a full disk): past it, committed batches are no longer folded in
// and the cursor stays, so they are read back from the database once
// writing works again. About 100 bytes a bucket.
const rollupDeltaCap = 4 * rollupMaxDeltas

type rollupKey struct {
	device int64
	metric string
	res    int64
	bucket int64
}

// rollups accumulates per-minute and per-hour aggregates in memory and
// writes them, with the watermark, in one transaction every
// Writer.RollupInterval. Committed batches are folded in right after their
// commit, from the values already decoded; only after a restart (or when
// the fold fell behind) are messages read back from the database. The
// database always holds rollups complete up to meta.rollup_seq: a crash
// loses only deltas that the next start derives again from the messages
// above it. All methods run on the write loop.
type rollups struct {
	saved     int64 // meta.rollup_seq
	cursor    int64 // deltas hold every message in (saved, cursor]
	deltas    map[rollupKey]*devices.Bucket
	lastFlush time.Time
}

const upsertRollup = `INSERT INTO rollups (device_id, metric, res, bucket, count, sum, min, max, first_ts, first, last_ts, last)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, metric, res, bucket) DO UPDATE SET
	count = count + excluded.count,
	-- held finite like devices.SaturatingAdd; NaN (Inf + -Inf in a row saved
	-- before sums were held finite) is NULL in SQLite and becomes 0.
	sum = coalesce(max(-1.7976931348623157e308, min(1.7976931348623157e308, sum + excluded.sum)), 0),
	min = min(min, excluded.min),
	max = max(max, excluded.max),
	first = CASE WHEN excluded.first_ts < first_ts THEN excluded.first ELSE first END,
	first_ts = min(first_ts, excluded.first_ts),
	last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
	last_ts = max(last_ts, excluded.last_ts)`

// foldCommitted adds a just-committed batch, if it continues the cursor.
func (w *Writer) foldCommitted(msgs []devices.Message, ids []int64) {
	r := &w.roll
	if len(msgs) == 0 || int64(msgs[0].Seq) != r.cursor+1 || len(r.deltas) >= rollupDeltaCap {
		return // behind: catchUp reads these back
	}
	for i := range msgs {
		addRollups(r.deltas, ids[i], &msgs[i])
	}
	r.cursor = int64(msgs[len(msgs)-1].Seq)
}

// catchUp folds up to one chunk of messages above the cursor, read back
// from the database. It reports whether the cursor has reached LastSeq.
func (w *Writer) catchUp(ctx context.Context) (bool, error) {
	r := &w.roll
	if devices.Seq(r.cursor) >= w.LastSeq() || len(r.deltas) >= rollupDeltaCap {
		return true, nil // caught up, or full until the deltas are written
	}
	rows, err := w.conn.QueryContext(ctx, `SELECT seq, device_id, ts, received, kind, flags, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?`, r.cursor, rollupChunk)
	if err != nil {
		return false, describe(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var m devices.Message
		var dev, kind, flags int64
		if err := rows.Scan(&m.Seq, &dev, &m.TS, &m.Received, &kind, &flags, &m.Payload); err != nil {
			return false, err
		}
		m.Kind, m.Flags = devices.Kind(kind), devices.Flags(flags)
		if m.Kind == devices.KindTelemetry && m.IsJSON() {
			_, m.Values, _ = devices.DecodePayload(m.Payload, m.Received)
		}
		addRollups(r.deltas, dev, &m)
		r.cursor = int64(m.Seq)
		n++
	}
	if err := rows.Err(); err != nil {
		return false, err
	}
	if n < rollupChunk {
		r.cursor = max(r.cursor, int64(w.LastSeq())) // the rest were deleted
	}
	return devices.Seq(r.cursor) >= w.LastSeq(), nil
}

// flushRollups writes the deltas and the watermark in one transaction. When
// that fails on a row, it writes them again one bucket at a time and leaves
// out the buckets that fail (logged and counted in RollupBucketsDropped):
// one bad bucket must not stop every other rollup from reaching the
// database.
func (w *Writer) flushRollups(ctx context.Context) error {
	r := &w.roll
	r.lastFlush = time.Now()
	if r.cursor == r.saved {
		return nil
	}
	err := w.writeRollupsTx(ctx, func(tx *sql.Tx) error { return writeRollups(ctx, tx, r.deltas) })
	if err != nil && rowError(err) {
		w.Logger.Warn("rollup flush failed; writing bucket by bucket", "buckets", len(r.deltas), "error", err)
		err = w.writeRollupsTx(ctx, func(tx *sql.Tx) error { return w.writeRollupsIsolated(ctx, tx, r.deltas) })
	}
	if err != nil {
		return err
	}
	r.saved = r.cursor
	clear(r.deltas)
	return nil
}

// writeRollupsTx runs write and then saves the watermark, in one transaction.
func (w *Writer) writeRollupsTx(ctx context.Context, write func(*sql.Tx) error) error {
	r := &w.roll
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return describe(err)
	}
	defer tx.Rollback()
	if err := write(tx); err != nil {
		return err
	}
	if _, err := tx.StmtContext(ctx, w.setMeta).ExecContext(ctx, "rollup_seq", r.cursor); err != nil {
		return describe(err)
	}
	return describe(tx.Commit())
}

// writeRollupsIsolated upserts each bucket in its own savepoint and drops
// the ones that fail.
func (w *Writer) writeRollupsIsolated(ctx context.Context, tx *sql.Tx, acc map[rollupKey]*devices.Bucket) error {
	stmt, err := tx.PrepareContext(ctx, upsertRollup)
	if err != nil {
		return describe(err)
	}
	defer stmt.Close()
	dropped := 0
	for k, b := range acc {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT bucket`); err != nil {
			return describe(err)
		}
		if _, err := stmt.ExecContext(ctx, k.device, k.metric, k.res, k.bucket, b.Count, b.Sum, b.Min, b.Max, b.FirstTS, b.First, b.LastTS, b.Last); err != nil {
			if !rowError(err) {
				return describe(err)
			}
			dropped++
			w.Logger.Error("rollup bucket left out", "device_id", k.device, "metric", k.metric, "res_ms", k.res, "bucket", k.bucket, "error", err)
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO bucket`); err != nil {
				return describe(err)
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE bucket`); err != nil {
			return describe(err)
		}
	}
	w.rollupDropped.Add(int64(dropped))
	return nil
}

// RollupBucketsDropped returns how many rollup buckets could not be written
// and were left out (their series are then computed from what remains).
func (w *Writer) RollupBucketsDropped() int64 { return w.rollupDropped.Load() }

// maintainRollups runs once a tick (and at shutdown): it catches up a
// little and writes the deltas when they are due.
func (w *Writer) maintainRollups(ctx context.Context, force bool) error {
	// Most of a tick, so that catching up after a restart or an upgrade is
	// quick; the loop still serves deletes and shutdown once a second.
	deadline := time.Now().Add(900 * time.Millisecond)
	for {
		done, err := w.catchUp(ctx)
		if err != nil {
			return err
		}
		if len(w.roll.deltas) >= rollupMaxDeltas {
			if err := w.flushRollups(ctx); err != nil {
				return err
			}
		}
		if done || time.Now().After(deadline) {
			break
		}
		// Behind (after a restart): keep messages flowing between chunks,
		// or under steady load the rollups would never catch up.
		if len(w.q) > 0 {
			w.commitRetrying(w.collect(nil))
		}
	}
	if force || time.Since(w.roll.lastFlush) >= w.RollupInterval || len(w.roll.deltas) >= rollupMaxDeltas {
		return w.flushRollups(ctx)
	}
	return nil
}

// addRollups adds m's numeric readings to the minute and hour buckets in acc.
func addRollups(acc map[rollupKey]*devices.Bucket, device int64, m *devices.Message) {
	for _, v := range m.Values {
		x, ok := devices.NumericValue(v.Value)
		if !ok || m.Kind != devices.KindTelemetry {
			continue
		}
		for _, res := range []int64{rollupMinute, rollupHour} {
			k := rollupKey{device, v.Name, res, floorDiv(v.TS, res) * res}
			b := acc[k]
			if b == nil {
				b = &devices.Bucket{}
				acc[k] = b
			}
			b.Add(x, v.TS)
		}
	}
}

func writeRollups(ctx context.Context, tx *sql.Tx, acc map[rollupKey]*devices.Bucket) error {
	if len(acc) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, upsertRollup)
	if err != nil {
		return describe(err)
	}
	defer stmt.Close()
	for k, b := range acc {
		if _, err := stmt.ExecContext(ctx, k.device, k.metric, k.res, k.bucket, b.Count, b.Sum, b.Min, b.Max, b.FirstTS, b.First, b.LastTS, b.Last); err != nil {
			return describe(err)
		}
	}
	return nil
}

// rebuildRollups recomputes a device's rollups over [lo, hi) (hour
// aligned) from its remaining messages, after a delete. It writes the
// pending deltas first, so the database holds everything up to the cursor.
func (w *Writer) rebuildRollups(ctx context.Context, device, lo, hi int64) error {
	if err := w.flushRollups(ctx); err != nil {
		return err
	}
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return describe(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM rollups WHERE device_id = ? AND bucket >= ? AND bucket < ?`, device, lo, hi); err != nil {
		return describe(err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT ts, received, kind, flags, payload FROM messages WHERE device_id = ? AND ts >= ? AND ts < ? AND seq <= ?`, device, lo, hi, w.roll.saved)
	if err != nil {
		return describe(err)
	}
	acc := map[rollupKey]*devices.Bucket{}
	for rows.Next() {
		var m devices.Message
		var kind, flags int64
		if err := rows.Scan(&m.TS, &m.Received, &kind, &flags, &m.Payload); err != nil {
			rows.Close()
			return err
		}
		m.Kind, m.Flags = devices.Kind(kind), devices.Flags(flags)
		if m.Kind == devices.KindTelemetry && m.IsJSON() {
			_, m.Values, _ = devices.DecodePayload(m.Payload, m.Received)
		}
		addRollups(acc, device, &m)
	}
	rows.Close()
	for k := range acc { // readings whose own ts lies outside [lo, hi) stay out
		if k.bucket < lo || k.bucket >= hi {
			delete(acc, k)
		}
	}
	if err := writeRollups(ctx, tx, acc); err != nil {
		return err
	}
	return describe(tx.Commit())
}
