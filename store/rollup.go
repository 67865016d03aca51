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

// rollupChunk is how many messages one rollup transaction reads.
const rollupChunk = 20000

// rollupBudget bounds the time one turn of the write loop spends on rollups
// while nothing else waits; with messages queued it stops after one chunk.
const rollupBudget = time.Second

type rollupKey struct {
	device int64
	metric string
	res    int64
	bucket int64
}

const upsertRollup = `INSERT INTO rollups (device_id, metric, res, bucket, count, sum, min, max, first_ts, first, last_ts, last)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, metric, res, bucket) DO UPDATE SET
	count = count + excluded.count,
	sum = sum + excluded.sum,
	min = min(min, excluded.min),
	max = max(max, excluded.max),
	first = CASE WHEN excluded.first_ts < first_ts THEN excluded.first ELSE first END,
	first_ts = min(first_ts, excluded.first_ts),
	last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
	last_ts = max(last_ts, excluded.last_ts)`

// buildRollups folds messages above meta.rollup_seq into the rollups, a
// chunk per transaction, until it has caught up, the budget is spent or
// messages are waiting. It runs on the write loop.
func (w *Writer) buildRollups(budget time.Duration) error {
	ctx := context.Background()
	deadline := time.Now().Add(budget)
	for {
		from, err := w.meta(ctx, "rollup_seq")
		if err != nil {
			return err
		}
		if devices.Seq(from) >= w.LastSeq() {
			return nil
		}
		if err := w.rollupChunk(ctx, from); err != nil {
			return err
		}
		if time.Now().After(deadline) || len(w.q) > 0 {
			return nil
		}
	}
}

func (w *Writer) rollupChunk(ctx context.Context, from int64) error {
	rows, err := w.conn.QueryContext(ctx, `SELECT seq, device_id, ts, received, kind, flags, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?`, from, rollupChunk)
	if err != nil {
		return describe(err)
	}
	acc := map[rollupKey]*devices.Bucket{}
	last := from
	for rows.Next() {
		var m devices.Message
		var dev, kind, flags int64
		if err := rows.Scan(&m.Seq, &dev, &m.TS, &m.Received, &kind, &flags, &m.Payload); err != nil {
			rows.Close()
			return err
		}
		last = int64(m.Seq)
		m.Kind, m.Flags = devices.Kind(kind), devices.Flags(flags)
		addRollups(acc, dev, &m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return describe(err)
	}
	defer tx.Rollback()
	if err := writeRollups(ctx, tx, acc); err != nil {
		return err
	}
	if _, err := tx.StmtContext(ctx, w.setMeta).ExecContext(ctx, "rollup_seq", last); err != nil {
		return describe(err)
	}
	return describe(tx.Commit())
}

// addRollups adds m's numeric readings to the minute and hour buckets in acc.
func addRollups(acc map[rollupKey]*devices.Bucket, device int64, m *devices.Message) {
	if m.Kind != devices.KindTelemetry || !m.IsJSON() {
		return
	}
	_, values, _ := devices.DecodePayload(m.Payload, m.Received)
	for _, v := range values {
		x, ok := devices.NumericValue(v.Value)
		if !ok {
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

// rebuildRollups recomputes a device's rollups over [lo, hi) (bucket
// aligned) from its remaining messages up to rollup_seq, after a delete.
func (w *Writer) rebuildRollups(ctx context.Context, device, lo, hi int64) error {
	upTo, err := w.meta(ctx, "rollup_seq")
	if err != nil {
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
	rows, err := tx.QueryContext(ctx, `SELECT seq, ts, received, kind, flags, payload FROM messages WHERE device_id = ? AND ts >= ? AND ts < ? AND seq <= ?`, device, lo, hi, upTo)
	if err != nil {
		return describe(err)
	}
	acc := map[rollupKey]*devices.Bucket{}
	for rows.Next() {
		var m devices.Message
		var kind, flags int64
		if err := rows.Scan(&m.Seq, &m.TS, &m.Received, &kind, &flags, &m.Payload); err != nil {
			rows.Close()
			return err
		}
		m.Kind, m.Flags = devices.Kind(kind), devices.Flags(flags)
		addRollups(acc, device, &m)
	}
	rows.Close()
	for k, b := range acc { // readings whose ts lies outside [lo, hi) stay out
		if k.bucket < lo || k.bucket >= hi {
			delete(acc, k)
			_ = b
		}
	}
	if err := writeRollups(ctx, tx, acc); err != nil {
		return err
	}
	return describe(tx.Commit())
}
