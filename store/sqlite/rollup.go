package sqlite

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
// writes them in rounds: every Writer.RollupInterval a round takes the
// buckets that changed and writes them rollupsPerStep at a time, each step
// inside a message commit (rollupInline; when idle, in an empty commit), so
// that a fleet's thousands of buckets never stall the write loop for long
// (writing 6,000 at once took about 50 ms). Each row records upto_seq, the message up to
// which it is complete; when a round ends, meta.rollup_seq becomes the
// cursor at its start: every row is complete at least that far. Series add
// a raw message above rollup_seq to a bucket only when it is above the
// bucket's upto_seq.
//
// Committed batches are folded in right after their commit, from the values
// already decoded; only after a restart (or when the fold fell behind) are
// messages read back from the database, skipping in each bucket what its
// row already holds. A crash loses only deltas that the next start derives
// again. All methods run on the write loop.
type rollups struct {
	saved     int64                         // meta.rollup_seq
	cursor    int64                         // every message up to cursor is in the rows or in deltas
	deltas    map[rollupKey]*devices.Bucket // what the rows do not hold yet
	lastFlush time.Time                     // when the last round began

	round    []rollupKey // buckets left to write in this round; nil: no round
	roundSeq int64       // the cursor when the round began: rollup_seq once it ends
	// inline: the round's steps ride along message commits (rollupInline),
	// which saves each its own fsync; after a step failed on a row, the
	// rest of the round goes in steps of their own (rollupStep), which can
	// leave a bad bucket out.
	inline bool

	// skip holds, after a restart, the rows an unfinished round wrote past
	// rollup_seq, with their upto_seq: catchUp must not add those messages
	// again. Dropped once the cursor passes them all.
	skip    map[rollupKey]int64
	skipMax int64
}

// rollupsPerStep is how many buckets one step of a round writes: with 64, a
// commit that carries a step stays under about 7 ms for a fleet of 1,000
// devices (BenchmarkRollupRoundCommits: 10.4 ms at 256, 7.0 at 128).
const rollupsPerStep = 64

const upsertRollup = `INSERT INTO rollups (device_id, metric, res, bucket, count, sum, min, max, first_ts, first, last_ts, last, upto_seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, metric, res, bucket) DO UPDATE SET
	upto_seq = max(upto_seq, excluded.upto_seq),
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

// loadRollupSkip reads the rows an unfinished round wrote past rollup_seq
// (a crash or a stop in the middle of a round), for catchUp to skip.
func (w *Writer) loadRollupSkip(ctx context.Context) error {
	r := &w.roll
	if unfinished, err := w.meta(ctx, "rollup_round"); err != nil || unfinished == 0 {
		return err // no round was under way: no row is past rollup_seq
	}
	rows, err := w.conn.QueryContext(ctx, `SELECT device_id, metric, res, bucket, upto_seq FROM rollups WHERE upto_seq > ?`, r.saved)
	if err != nil {
		return describe(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k rollupKey
		var upto int64
		if err := rows.Scan(&k.device, &k.metric, &k.res, &k.bucket, &upto); err != nil {
			return err
		}
		if r.skip == nil {
			r.skip = make(map[rollupKey]int64)
		}
		r.skip[k] = upto
		r.skipMax = max(r.skipMax, upto)
	}
	return rows.Err()
}

// foldCommitted adds a just-committed batch, if it continues the cursor.
func (w *Writer) foldCommitted(msgs []devices.Message, ids []int64) {
	r := &w.roll
	if len(msgs) == 0 || int64(msgs[0].Seq) != r.cursor+1 || len(r.deltas) >= rollupDeltaCap {
		return // behind: catchUp reads these back
	}
	for i := range msgs {
		addRollups(r.deltas, nil, ids[i], &msgs[i])
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
		addRollups(r.deltas, r.skip, dev, &m)
		r.cursor = int64(m.Seq)
		n++
	}
	if r.skip != nil && r.cursor >= r.skipMax {
		r.skip = nil // past every row an unfinished round wrote
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
//
// It writes every delta at once and ends any round: for deletes, shutdown
// and catching up, not for the steady state (rollupStep).
func (w *Writer) flushRollups(ctx context.Context) error {
	r := &w.roll
	r.lastFlush = time.Now()
	if r.cursor == r.saved && len(r.deltas) == 0 {
		r.round = nil
		return nil
	}
	if err := w.writeBuckets(ctx, r.deltas, r.cursor); err != nil {
		return err
	}
	r.saved = r.cursor
	r.round = nil
	clear(r.deltas)
	return nil
}

// writeBuckets writes the buckets of acc, complete up to upto, and sets
// rollup_seq to setSeq unless it is negative, in one transaction; when a
// row fails, again bucket by bucket, leaving out (and counting) the ones
// that fail.
func (w *Writer) writeBuckets(ctx context.Context, acc map[rollupKey]*devices.Bucket, upto int64) error {
	return w.writeBucketsSetting(ctx, acc, upto, upto)
}

func (w *Writer) writeBucketsSetting(ctx context.Context, acc map[rollupKey]*devices.Bucket, upto, setSeq int64) error {
	err := w.writeRollupsTx(ctx, setSeq, func(tx *sql.Tx) error { return writeRollups(ctx, tx, acc, upto) })
	if err != nil && rowError(err) {
		w.Logger.Warn("rollup flush failed; writing bucket by bucket", "buckets", len(acc), "error", err)
		err = w.writeRollupsTx(ctx, setSeq, func(tx *sql.Tx) error { return w.writeRollupsIsolated(ctx, tx, acc, upto) })
	}
	return err
}

// startRound begins writing the buckets that changed. With none, every
// folded message is in the rows already: rollup_seq moves to the cursor.
func (w *Writer) startRollupRound(ctx context.Context) error {
	r := &w.roll
	r.lastFlush = time.Now()
	if len(r.deltas) == 0 {
		if r.cursor == r.saved {
			return nil
		}
		if err := w.writeRollupsTx(ctx, r.cursor, func(*sql.Tx) error { return nil }); err != nil {
			return err
		}
		r.saved = r.cursor
		return nil
	}
	// Marked in the database, so that a start after a crash in the middle
	// of the round knows to look for rows written past rollup_seq.
	if _, err := w.setMeta.ExecContext(ctx, "rollup_round", 1); err != nil {
		return describe(err)
	}
	r.round = make([]rollupKey, 0, len(r.deltas))
	for k := range r.deltas {
		r.round = append(r.round, k)
	}
	r.roundSeq = r.cursor
	r.inline = true
	return nil
}

// rollupStep writes the next rollupsPerStep buckets of the round, complete
// up to the cursor, in a transaction of their own; the last step also
// moves rollup_seq to the round's start.
func (w *Writer) rollupStep(ctx context.Context) error {
	r := &w.roll
	if r.round == nil {
		return nil
	}
	st := w.nextRolledStep()
	setSeq := int64(-1)
	if st.last {
		setSeq = r.roundSeq
	}
	if err := w.writeBucketsSetting(ctx, st.chunk, r.cursor, setSeq); err != nil {
		return err
	}
	w.rollupCommitted(st)
	return nil
}

// nextRolledStep takes the next rollupsPerStep buckets of the round.
func (w *Writer) nextRolledStep() *rolledStep {
	r := &w.roll
	st := &rolledStep{n: min(len(r.round), rollupsPerStep)}
	st.last = st.n == len(r.round)
	st.chunk = make(map[rollupKey]*devices.Bucket, st.n)
	for _, k := range r.round[:st.n] {
		if d := r.deltas[k]; d != nil { // a deleted device's are gone
			st.chunk[k] = d
		}
	}
	return st
}

// saveRollupSeq records that every row is complete up to seq and that no
// round is under way.
func (w *Writer) saveRollupSeq(ctx context.Context, stmt *sql.Stmt, seq int64) error {
	for _, kv := range []struct {
		key string
		v   int64
	}{{"rollup_seq", seq}, {"rollup_round", 0}} {
		if _, err := stmt.ExecContext(ctx, kv.key, kv.v); err != nil {
			return describe(err)
		}
	}
	return nil
}

// rolledStep is what a message commit wrote of the rollup round.
type rolledStep struct {
	chunk map[rollupKey]*devices.Bucket
	n     int  // round entries it covers
	last  bool // it ended the round
}

// rollupInline writes the next step of the round inside the message
// commit under way, in a savepoint: if it fails, it is rolled back alone,
// the commit goes on without it and the round continues in steps of its
// own. rollupCommitted applies it once the commit succeeded.
func (w *Writer) rollupInline(ctx context.Context) *rolledStep {
	r := &w.roll
	if r.round == nil || !r.inline {
		return nil
	}
	st := w.nextRolledStep()
	if _, err := w.conn.ExecContext(ctx, `SAVEPOINT rollups`); err != nil {
		return nil
	}
	err := w.upsertBuckets(ctx, st.chunk, r.cursor)
	if err == nil && st.last {
		err = w.saveRollupSeq(ctx, w.setMeta, r.roundSeq)
	}
	if err != nil {
		w.conn.ExecContext(ctx, `ROLLBACK TO rollups`)
		w.conn.ExecContext(ctx, `RELEASE rollups`)
		if rowError(err) {
			r.inline = false
			w.Logger.Warn("rollup step failed inside a commit; the round goes on in steps of its own", "error", err)
		}
		return nil
	}
	if _, err := w.conn.ExecContext(ctx, `RELEASE rollups`); err != nil {
		return nil
	}
	return st
}

// rollupCommitted applies a step that a message commit carried.
func (w *Writer) rollupCommitted(st *rolledStep) {
	r := &w.roll
	if st == nil {
		return
	}
	for k := range st.chunk {
		delete(r.deltas, k)
	}
	if r.round = r.round[st.n:]; st.last {
		r.round = nil
		r.saved = r.roundSeq
	}
}

// upsertBuckets upserts acc on the writer's connection with its prepared
// statement, inside the transaction under way.
func (w *Writer) upsertBuckets(ctx context.Context, acc map[rollupKey]*devices.Bucket, upto int64) error {
	for k, b := range acc {
		if _, err := w.upsert.ExecContext(ctx, k.device, k.metric, k.res, k.bucket, b.Count, b.Sum, b.Min, b.Max, b.FirstTS, b.First, b.LastTS, b.Last, upto); err != nil {
			return describe(err)
		}
	}
	return nil
}

// writeRollupsTx runs write and then, unless setSeq is negative, saves the
// watermark, in one transaction.
func (w *Writer) writeRollupsTx(ctx context.Context, setSeq int64, write func(*sql.Tx) error) error {
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return describe(err)
	}
	defer tx.Rollback()
	if err := write(tx); err != nil {
		return err
	}
	if setSeq >= 0 {
		if err := w.saveRollupSeq(ctx, tx.StmtContext(ctx, w.setMeta), setSeq); err != nil {
			return err
		}
	}
	return describe(tx.Commit())
}

// writeRollupsIsolated upserts each bucket in its own savepoint and drops
// the ones that fail.
func (w *Writer) writeRollupsIsolated(ctx context.Context, tx *sql.Tx, acc map[rollupKey]*devices.Bucket, upto int64) error {
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
		if _, err := stmt.ExecContext(ctx, k.device, k.metric, k.res, k.bucket, b.Count, b.Sum, b.Min, b.Max, b.FirstTS, b.First, b.LastTS, b.Last, upto); err != nil {
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
// little and begins a round of writes when one is due (force: writes
// everything now).
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
		w.Yield()
	}
	if force || len(w.roll.deltas) >= rollupMaxDeltas {
		return w.flushRollups(ctx)
	}
	if w.roll.round == nil && time.Since(w.roll.lastFlush) >= w.RollupInterval {
		return w.startRollupRound(ctx)
	}
	return nil
}

// addRollups adds m's numeric readings to the minute and hour buckets in
// acc, except to buckets whose row already holds m (skip: upto_seq by key).
func addRollups(acc map[rollupKey]*devices.Bucket, skip map[rollupKey]int64, device int64, m *devices.Message) {
	for _, v := range m.Values {
		x, ok := devices.NumericValue(v.Value)
		if !ok || m.Kind != devices.KindTelemetry {
			continue
		}
		for _, res := range []int64{rollupMinute, rollupHour} {
			k := rollupKey{device, v.Name, res, floorDiv(v.TS, res) * res}
			if skip != nil && int64(m.Seq) <= skip[k] {
				continue
			}
			b := acc[k]
			if b == nil {
				b = &devices.Bucket{}
				acc[k] = b
			}
			b.Add(x, v.TS)
		}
	}
}

func writeRollups(ctx context.Context, tx *sql.Tx, acc map[rollupKey]*devices.Bucket, upto int64) error {
	if len(acc) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, upsertRollup)
	if err != nil {
		return describe(err)
	}
	defer stmt.Close()
	for k, b := range acc {
		if _, err := stmt.ExecContext(ctx, k.device, k.metric, k.res, k.bucket, b.Count, b.Sum, b.Min, b.Max, b.FirstTS, b.First, b.LastTS, b.Last, upto); err != nil {
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
		addRollups(acc, nil, device, &m)
	}
	rows.Close()
	for k := range acc { // readings whose own ts lies outside [lo, hi) stay out
		if k.bucket < lo || k.bucket >= hi {
			delete(acc, k)
		}
	}
	if err := writeRollups(ctx, tx, acc, w.roll.saved); err != nil {
		return err
	}
	return describe(tx.Commit())
}
