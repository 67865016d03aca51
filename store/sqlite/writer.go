package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// Defaults for Writer fields.
const (
	DefaultFlushInterval  = time.Second
	DefaultRollupInterval = 5 * time.Second
	// DefaultRetentionInterval is how often retention runs.
	DefaultRetentionInterval = time.Minute
)

// rowsPerInsert is how many rows one INSERT statement carries. Multi-row
// inserts cut the per-statement cost of database/sql, which dominates with
// small rows; 9 columns x 64 rows stays far below SQLite's parameter limit.
const rowsPerInsert = 64

// devicesPerFlush caps the device summaries saved by one commit, so that a
// fleet of thousands of devices never adds more than a few milliseconds to
// any one batch.
const devicesPerFlush = 128

// summaryBytesPerFlush caps the latest-values JSON one commit saves, so that
// devices with many metrics spread over several commits too.
const summaryBytesPerFlush = 256 << 10

// Writer is the SQLite backend of the ingest pipeline (store.Pipeline, whose
// fields it has) and the only writer of the database file: a lock file
// keeps a second process from opening one. Each batch is one transaction
// begun by hand on the writer's own connection, with statements prepared
// once.
//
// Device summaries (counts, last seen, latest values) live in memory
// (store.Summaries, shared with the readers), and are saved every
// FlushInterval in rounds of at most devicesPerFlush devices, each part
// riding on a message commit. Because they are derived from the messages, a
// crash loses nothing: Open folds in again every message above
// meta.summary_seq. Rollups are built the same way (rollups).
type Writer struct {
	store.Pipeline

	// DB is the opened database. Required.
	DB *DB
	// FlushInterval is how often changed device summaries are saved. Default
	// DefaultFlushInterval.
	FlushInterval time.Duration
	// RollupInterval is how often rollups of new messages are written to the
	// database (series add the messages above them meanwhile). Default
	// DefaultRollupInterval.
	RollupInterval time.Duration
	// Retention holds the retention settings: Retention.Hub deletes
	// messages whose ts (the reading's time) is older than that, in whole
	// hours, with their rollups; 0 keeps everything. Devices may override it
	// (SetRetention).
	store.Retention
	// MaxDBSize, when positive, caps the bytes the database uses: past it,
	// the oldest messages (by arrival) are deleted until it is under 90%.
	// Rollups stay, so charts of older periods keep their minute detail.
	MaxDBSize int64
	// RetentionInterval is how often retention and MaxDBSize are applied.
	// Default DefaultRetentionInterval.
	RetentionInterval time.Duration
	// OnStatus receives each status event recorded by SetStatus, after it
	// is stored (for the live feed). Optional.
	OnStatus func(devices.StatusEvent)

	lock    *writerLock // one Writer per database file
	conn    *sql.Conn
	full    *sql.Stmt         // INSERT of rowsPerInsert rows
	partial map[int]*sql.Stmt // INSERT of fewer rows, by count
	update  *sql.Stmt         // UPDATE of one device's summary
	setMeta *sql.Stmt         // upsert of a meta counter
	upsert  *sql.Stmt         // upsert of a rollup bucket (upsertRollup)
	args    []any
	seq     int64 // highest committed seq; write loop only

	sums *store.Summaries
	roll rollups // write loop only

	closing atomic.Bool // Close was called

	sideStmts      store.ConnStmts // the statements of the writes that ride (write loop only)
	sideMu         sync.Mutex
	side           []func(x store.Execer) func(error) // writes to ride on the next commit (Ride)
	sideClosed     bool
	rollupDropped  atomic.Int64 // rollup buckets that could not be written
	rollupThrottle devices.Throttle
}

// NewWriter returns a Writer on db with every field at its default.
func NewWriter(db *DB) *Writer {
	return &Writer{
		Pipeline: store.Pipeline{
			MaxBatch:      store.DefaultMaxBatch,
			Linger:        store.DefaultLinger,
			QueueSize:     store.DefaultQueueSize,
			MaxMetrics:    store.DefaultMaxMetrics,
			MaxMetricName: store.DefaultMaxMetricName,
			Logger:        slog.Default().With("component", "writer"),
		},
		DB:             db,
		FlushInterval:  DefaultFlushInterval,
		RollupInterval: DefaultRollupInterval,
	}
}

// Open loads the device summaries and the sequence high-water mark, folds
// in messages the summaries do not yet reflect, prepares the statements and
// starts the pipeline.
func (w *Writer) Open() (err error) {
	if w.DB == nil || w.DB.write == nil {
		return errors.New("open writer: opened DB required")
	}
	if w.FlushInterval <= 0 {
		w.FlushInterval = DefaultFlushInterval
	}
	if w.RollupInterval <= 0 {
		w.RollupInterval = DefaultRollupInterval
	}
	if w.RetentionInterval <= 0 {
		w.RetentionInterval = DefaultRetentionInterval
	}
	if w.Logger == nil {
		w.Logger = slog.Default().With("component", "writer")
	}
	ctx := context.Background()
	if w.lock, err = lockWriter(w.DB.Path); err != nil {
		return err
	}
	if w.conn, err = w.DB.write.Conn(ctx); err != nil {
		w.lock.release()
		return fmt.Errorf("open writer: %w", describe(err))
	}
	defer func() {
		if err != nil {
			w.closeStatements()
			w.conn.Close()
			w.lock.release()
		}
	}()
	for _, p := range []struct {
		dst **sql.Stmt
		q   string
	}{
		{&w.full, insertSQL(rowsPerInsert)},
		{&w.update, `UPDATE devices SET first_seen = ?, last_seen = ?, message_count = ?, last_seq = ?, status = ?, status_at = ?, latest = ? WHERE id = ?`},
		{&w.setMeta, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`},
		{&w.upsert, upsertRollup},
	} {
		if *p.dst, err = w.conn.PrepareContext(ctx, p.q); err != nil {
			return fmt.Errorf("open writer: %w", describe(err))
		}
	}
	w.partial = make(map[int]*sql.Stmt)
	w.args = make([]any, 0, 9*rowsPerInsert)
	if err := w.load(ctx); err != nil {
		return fmt.Errorf("open writer: %w", err)
	}
	if err := w.OpenRetention(ctx, &w.Pipeline, w.conn, w.sums); err != nil {
		return fmt.Errorf("open writer: %w", describe(err))
	}
	w.Every(w.FlushInterval, w.tick)
	w.Every(w.RetentionInterval, func(context.Context) {
		if res, err := w.retain(time.Now()); err != nil {
			w.Logger.Error("retention pass failed; will retry", "error", err)
		} else if res.Deleted > 0 {
			w.Logger.Info("retention deleted old messages", "messages", res.Deleted, "devices", res.Devices, "by_size", res.BySize, "took", res.Took, "longest_step", res.LongestStep)
		}
	})
	w.sums.SetSeq(devices.Seq(w.seq))
	w.Start(w, devices.Seq(w.seq), w.sums)
	return nil
}

// Summaries returns the device summaries the writer keeps, for readers.
func (w *Writer) Summaries() *store.Summaries { return w.sums }

func insertSQL(rows int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO messages (seq, device_id, ts, received, topic, kind, qos, flags, payload) VALUES `)
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?,?,?,?,?,?,?,?)`)
	}
	return b.String()
}

func (w *Writer) meta(ctx context.Context, key string) (int64, error) {
	var v int64
	err := w.conn.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, describe(err)
}

// load reads the device summaries, the highest sequence number ever
// assigned (kept in meta, so deleting the newest rows never lets a number be
// reused) and folds in the messages above meta.summary_seq.
func (w *Writer) load(ctx context.Context) error {
	last, err := w.meta(ctx, "last_seq")
	if err != nil {
		return err
	}
	var maxSeq sql.NullInt64
	if err := w.conn.QueryRowContext(ctx, `SELECT max(seq) FROM messages`).Scan(&maxSeq); err != nil {
		return describe(err)
	}
	w.seq = max(last, maxSeq.Int64)
	if w.roll.saved, err = w.meta(ctx, "rollup_seq"); err != nil {
		return err
	}
	w.roll.cursor, w.roll.deltas, w.roll.lastFlush = w.roll.saved, map[rollupKey]*devices.Bucket{}, time.Now()
	if err := w.loadRollupSkip(ctx); err != nil {
		return err
	}

	rows, err := w.conn.QueryContext(ctx, `SELECT id, name, first_seen, last_seen, message_count, last_seq, status, status_at, latest FROM devices`)
	if err != nil {
		return describe(err)
	}
	defer rows.Close()
	w.sums = store.NewSummaries()
	byID := make(map[int64]*store.Summary)
	for rows.Next() {
		d := &store.Summary{}
		var latest string
		dv := &d.Device
		if err := rows.Scan(&d.ID, &d.Name, &dv.FirstSeen, &dv.LastSeen, &dv.MessageCount, &dv.LastSeq, &dv.Status, &dv.StatusAt, &latest); err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(latest), &dv.Latest); err != nil {
			dv.Latest = nil
		}
		w.sums.Add(d)
		byID[d.ID] = d
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows.Close()
	return w.fold(ctx, byID)
}

// fold applies the messages above meta.summary_seq to the device summaries.
// Each device skips what its saved row already counts (seq <= its last_seq),
// so folding twice changes nothing.
func (w *Writer) fold(ctx context.Context, byID map[int64]*store.Summary) error {
	from, err := w.meta(ctx, "summary_seq")
	if err != nil {
		return err
	}
	rows, err := w.conn.QueryContext(ctx, `SELECT seq, device_id, ts, received, kind, flags, payload FROM messages WHERE seq > ? ORDER BY seq`, from)
	if err != nil {
		return describe(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var m devices.Message
		var id, kind, flags int64
		if err := rows.Scan(&m.Seq, &id, &m.TS, &m.Received, &kind, &flags, &m.Payload); err != nil {
			return err
		}
		d := byID[id]
		if d == nil {
			continue
		}
		m.Kind, m.Flags = devices.Kind(kind), devices.Flags(flags)
		if m.Kind == devices.KindTelemetry && m.IsJSON() {
			_, m.Values, _ = devices.DecodePayload(m.Payload, m.Received)
		}
		if d.Fold(&m) {
			n++
		}
	}
	if n > 0 {
		w.Logger.Info("folded messages into device summaries", "messages", n, "after_seq", from)
	}
	return rows.Err()
}

// Device returns the current summary of one device, or ErrNotFound.
func (w *Writer) Device(id string) (*devices.Device, error) { return w.sums.Device(id) }

// Devices returns the current summaries of every device, ordered by id.
func (w *Writer) Devices() []*devices.Device { return w.sums.Devices() }

// Activity lists every device's last-seen time and status, for
// devices.Presence.
func (w *Writer) Activity() []devices.Activity { return w.sums.Activity() }

// ActivityOf returns one device's Activity.
func (w *Writer) ActivityOf(id string) (devices.Activity, bool) { return w.sums.ActivityOf(id) }

var (
	_ devices.MessageWriter = (*Writer)(nil)
	_ devices.DataDeleter   = (*Writer)(nil)
	_ store.Backend         = (*Writer)(nil)
)

// Close stops taking messages, commits and dispatches everything already
// queued, saves every device summary and the rollups, and waits for the
// pipeline (store.Pipeline.Stop). It does not close the DB.
func (w *Writer) Close(ctx context.Context) error {
	if w.conn == nil || !w.closing.CompareAndSwap(false, true) {
		return nil
	}
	err := w.Stop(ctx)
	w.closeStatements()
	if cerr := w.conn.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if cerr := w.lock.release(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (w *Writer) closeStatements() {
	w.sideStmts.Close()
	for _, s := range w.partial {
		s.Close()
	}
	for _, s := range []*sql.Stmt{w.full, w.update, w.setMeta, w.upsert} {
		if s != nil {
			s.Close()
		}
	}
}

// tick runs every FlushInterval on the write loop: it begins a round of
// summary saves and of rollup writes, and while the hub is idle carries
// them out in commits of their own.
func (w *Writer) tick(ctx context.Context) {
	w.sums.StartRound(w.seq)
	// Idle: save the round's summaries without waiting for messages.
	for w.sums.InRound() && !w.Busy() {
		w.CommitEmpty()
	}
	// A round of rollup writes begins every RollupInterval; series add the
	// raw messages above the rows meanwhile.
	if err := w.maintainRollups(ctx, false); err != nil {
		w.Logger.Error("building rollups failed; will retry", "error", err)
	}
	for w.roll.round != nil && !w.Busy() {
		if w.roll.inline {
			w.CommitEmpty() // carries the next rollup step
		} else if !w.stepRollups() {
			break
		}
	}
}

// AfterBatch implements store.Backend: a rollup round that no longer rides
// on message commits takes its next step.
func (w *Writer) AfterBatch(ctx context.Context) {
	if !w.roll.inline {
		w.stepRollups()
	}
}

// Ride implements store.GroupTx's Ride: the group is applied inside the
// next commit (message or empty), on the writer's connection, and settled
// with its outcome. It fails once the writer has drained.
func (w *Writer) Ride(apply func(x store.Execer) func(error)) error {
	w.sideMu.Lock()
	defer w.sideMu.Unlock()
	if w.sideClosed {
		return devices.ErrClosed
	}
	w.side = append(w.side, apply)
	w.Kick()
	return nil
}

// takeSide returns the writes waiting to ride on a commit.
func (w *Writer) takeSide() []func(x store.Execer) func(error) {
	w.sideMu.Lock()
	defer w.sideMu.Unlock()
	side := w.side
	w.side = nil
	return side
}

// Drain implements store.Backend: at shutdown, every summary and every
// rollup delta is saved.
func (w *Writer) Drain(ctx context.Context) {
	// Writes riding on commits go in a last one; later ones are refused,
	// and those the last commit could not take fail.
	w.sideMu.Lock()
	w.sideClosed = true
	pending := len(w.side) > 0
	w.sideMu.Unlock()
	if pending {
		w.CommitEmpty()
	}
	for _, apply := range w.takeSide() {
		apply(nil)(devices.ErrClosed)
	}
	w.sums.StartRound(w.seq)
	for w.sums.InRound() {
		if !w.CommitEmpty() {
			break
		}
	}
	if err := w.flushRollups(ctx); err != nil {
		w.Logger.Error("saving rollups at shutdown failed; they are rebuilt at the next start", "error", err)
	}
}

// stepRollups writes the next part of a rollup round, if one is under way,
// and reports whether it succeeded. A failure is logged (at most once a
// minute) and retried at the next step.
func (w *Writer) stepRollups() bool {
	if w.roll.round == nil {
		return false
	}
	if err := w.rollupStep(context.Background()); err != nil {
		if ok, suppressed := w.rollupThrottle.Allow("rollup", time.Now()); ok {
			w.Logger.Error("writing rollups failed; will retry", "error", err, "suppressed_since_last", suppressed)
		}
		return false
	}
	return true
}

// batch is one transaction on the writer's connection: the messages, plus
// the next part of the summary round and the next rollup step.
type batch struct {
	w       *Writer
	seq     int64 // the last seq assigned
	msgs    []*devices.Message
	ds      []*store.Summary // msgs[i]'s device
	created []string         // devices whose rows this transaction inserts
	rows    int              // rows in w.args, not yet inserted
}

// Begin implements store.Backend. The transaction is begun and ended by
// hand on the writer's own connection, so that the statements prepared on
// it run as they are: database/sql's Tx.StmtContext prepares a Conn's
// statement again for every transaction, the 576-placeholder INSERT
// included.
func (w *Writer) Begin(ctx context.Context) (store.Batch, error) {
	if _, err := w.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return nil, describe(err)
	}
	w.args = w.args[:0]
	return &batch{w: w, seq: w.seq}, nil
}

// Append implements store.Batch: rows are inserted rowsPerInsert at a time.
func (b *batch) Append(ctx context.Context, m *devices.Message) error {
	w := b.w
	d, isNew, err := w.device(ctx, w.conn, m.Device, m.Received)
	if err != nil {
		return err
	}
	if isNew {
		b.created = append(b.created, m.Device)
	}
	b.seq++
	m.Seq = devices.Seq(b.seq)
	b.msgs, b.ds = append(b.msgs, m), append(b.ds, d)
	w.args = append(w.args, b.seq, d.ID, m.TS, m.Received, m.Topic, int64(m.Kind), int64(m.QoS), int64(m.Flags), payloadArg(m.Payload))
	if b.rows++; b.rows == rowsPerInsert {
		if _, err := w.full.ExecContext(ctx, w.args...); err != nil {
			return describe(err)
		}
		w.args, b.rows = w.args[:0], 0
	}
	return nil
}

// Commit implements store.Batch. It writes the rest of the rows, the next
// part of the summary round and the next rollup step, commits, and only
// then advances the sequence, the summaries and the rollups.
func (b *batch) Commit(ctx context.Context) error {
	w := b.w
	if b.rows > 0 {
		stmt, err := w.partialStmt(ctx, b.rows)
		if err != nil {
			return err
		}
		if _, err := stmt.ExecContext(ctx, w.args...); err != nil {
			return describe(err)
		}
	}
	if len(b.msgs) > 0 {
		if _, err := w.setMeta.ExecContext(ctx, "last_seq", b.seq); err != nil {
			return describe(err)
		}
	}
	flushed, err := w.flushPart(ctx)
	if err != nil {
		return err
	}
	rolled := w.rollupInline(ctx)
	var settles []func(error)
	for _, apply := range w.takeSide() { // commands and attributes (Ride)
		w.sideStmts.Conn = w.conn
		settles = append(settles, apply(&w.sideStmts))
	}
	_, err = w.conn.ExecContext(ctx, `COMMIT`)
	for _, settle := range settles {
		settle(describe(err))
	}
	if err != nil {
		return describe(err)
	}
	w.rollupCommitted(rolled)
	msgs := make([]devices.Message, len(b.msgs))
	ids := make([]int64, len(b.msgs))
	for i, m := range b.msgs {
		msgs[i], ids[i] = *m, b.ds[i].ID
	}
	w.sums.Apply(b.ds, msgs)
	w.foldCommitted(msgs, ids)
	w.sums.Saved(flushed)
	w.seq = b.seq
	return nil
}

// Rollback implements store.Batch; the devices it created are forgotten,
// their rows being rolled back.
func (b *batch) Rollback(ctx context.Context) error {
	w := b.w
	for _, name := range b.created {
		w.sums.Remove(name)
	}
	if _, err := w.conn.ExecContext(ctx, `ROLLBACK`); err != nil && !strings.Contains(err.Error(), "no transaction is active") {
		return describe(err)
	}
	return nil
}

// flushPart saves the next part of the summary round in the transaction
// under way, and records summary_seq when it completes the round. It
// returns how many devices it saved; they leave the round after commit.
func (w *Writer) flushPart(ctx context.Context) (int, error) {
	if !w.sums.InRound() {
		return 0, nil
	}
	part, last := w.sums.RoundPart(devicesPerFlush, summaryBytesPerFlush)
	for _, r := range part {
		dv := &r.Device
		if _, err := w.update.ExecContext(ctx, dv.FirstSeen, dv.LastSeen, dv.MessageCount, dv.LastSeq, dv.Status, dv.StatusAt, string(r.Latest), r.ID); err != nil {
			return 0, describe(err)
		}
	}
	if last {
		if _, err := w.setMeta.ExecContext(ctx, "summary_seq", w.sums.RoundSeq()); err != nil {
			return 0, describe(err)
		}
	}
	return len(part), nil
}

// payloadArg keeps an empty payload a zero-length BLOB rather than NULL.
func payloadArg(p []byte) []byte {
	if p == nil {
		return []byte{}
	}
	return p
}

func (w *Writer) partialStmt(ctx context.Context, rows int) (*sql.Stmt, error) {
	if s, ok := w.partial[rows]; ok {
		return s, nil
	}
	s, err := w.conn.PrepareContext(ctx, insertSQL(rows))
	if err != nil {
		return nil, describe(err)
	}
	w.partial[rows] = s
	return s, nil
}

// rowQuerier is a transaction: a *sql.Tx, or the writer's connection
// inside a transaction begun by hand (Begin).
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// device returns the summary of name, inserting the device row first when
// it is new.
func (w *Writer) device(ctx context.Context, tx rowQuerier, name string, now int64) (*store.Summary, bool, error) {
	if d := w.sums.Get(name); d != nil {
		return d, false, nil
	}
	d := &store.Summary{Name: name, Device: devices.Device{FirstSeen: now, LastSeen: now}}
	if err := tx.QueryRowContext(ctx, `INSERT INTO devices (name, first_seen, last_seen) VALUES (?, ?, ?) RETURNING id`, name, now, now).Scan(&d.ID); err != nil {
		return nil, false, describe(err)
	}
	return w.sums.Add(d), true, nil
}

// deleteChunk is how many rows one delete transaction removes; queued
// messages are committed between chunks, so a large delete never holds up
// ingestion for long.
const deleteChunk = 5000

// latestRebuildRows is how many of a device's newest remaining messages
// rebuild its latest values after a range of its messages was deleted.
const latestRebuildRows = 1000

type deleteOp struct {
	device   string
	from, to int64 // ts bounds, inclusive (devices.MinTime, MaxTime: unbounded)
	all      bool  // the device itself goes too
}

// DeleteMessages deletes a device's messages with from <= ts <= to
// (devices.MinTime and MaxTime leave a side unbounded) and returns how many
// went. The device's count drops
// accordingly and its latest values are rebuilt from its newest remaining
// messages; first and last seen stay as observed. It returns ErrNotFound
// for an unknown device.
func (w *Writer) DeleteMessages(ctx context.Context, device string, from, to int64) (int64, error) {
	if from > to {
		return 0, fmt.Errorf("%w: from is after to", devices.ErrInvalid)
	}
	return w.delete(ctx, deleteOp{device: device, from: from, to: to})
}

// DeleteDevice deletes a device and all its messages. A later message from
// it creates it anew.
func (w *Writer) DeleteDevice(ctx context.Context, device string) (int64, error) {
	from, to := devices.AllTime()
	return w.delete(ctx, deleteOp{device: device, from: from, to: to, all: true})
}

func (w *Writer) delete(ctx context.Context, op deleteOp) (int64, error) {
	var n int64
	err := w.Run(ctx, func() (err error) { n, err = w.deleteMessages(op); return err })
	return n, err
}

// deleteMessages runs on the write loop.
func (w *Writer) deleteMessages(op deleteOp) (int64, error) {
	d := w.sums.Get(op.device)
	if d == nil {
		return 0, fmt.Errorf("device %q: %w", op.device, devices.ErrNotFound)
	}
	ctx := context.Background()
	q := `DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE device_id = ?`
	args := []any{d.ID}
	if op.from > devices.MinTime {
		q += ` AND ts >= ?`
		args = append(args, op.from)
	}
	if op.to < devices.MaxTime {
		q += ` AND ts <= ?`
		args = append(args, op.to)
	}
	q += ` LIMIT ?)`
	args = append(args, deleteChunk)
	var total int64
	for {
		res, err := w.conn.ExecContext(ctx, q, args...)
		if err != nil {
			return total, describe(err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < deleteChunk {
			break
		}
		w.Yield() // let waiting messages in between chunks
	}
	if op.all {
		return total, w.dropDevice(ctx, d)
	}
	lo, hi := floorDiv(max(op.from, devices.MinTime), rollupHour)*rollupHour, (floorDiv(min(op.to, devices.MaxTime), rollupHour)+1)*rollupHour
	if err := w.rebuildRollups(ctx, d.ID, lo, hi); err != nil {
		return total, err
	}
	return total, w.rebuildAfterDelete(ctx, d, total)
}

func (w *Writer) dropDevice(ctx context.Context, d *store.Summary) error {
	for k := range w.roll.deltas {
		if k.device == d.ID {
			delete(w.roll.deltas, k)
		}
	}
	if err := w.deleteDeviceRows(ctx, d.ID); err != nil {
		return err
	}
	w.sums.Remove(d.Name)
	w.ForgetNames(d.Name)
	return nil
}

// deleteDeviceRows deletes a device whose messages are gone, with its
// rollups and events, in one transaction: a failure leaves the device
// whole. Its retention override is kept by name, for a device of that name
// created again.
func (w *Writer) deleteDeviceRows(ctx context.Context, id int64) error {
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return describe(err)
	}
	defer tx.Rollback()
	for _, q := range []string{
		`DELETE FROM rollups WHERE device_id = ?`,
		`DELETE FROM device_events WHERE device_id = ?`,
		`DELETE FROM devices WHERE id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return describe(err)
		}
	}
	return describe(tx.Commit())
}

// rebuildAfterDelete corrects a device's count and rebuilds its latest
// values from its newest remaining messages, then saves the summary.
func (w *Writer) rebuildAfterDelete(ctx context.Context, d *store.Summary, deleted int64) error {
	rows, err := w.conn.QueryContext(ctx, `SELECT seq, ts, received, kind, flags, payload FROM messages WHERE device_id = ? ORDER BY ts DESC, seq DESC LIMIT ?`, d.ID, latestRebuildRows)
	if err != nil {
		return describe(err)
	}
	var recent []devices.Message
	for rows.Next() {
		var m devices.Message
		var kind, flags int64
		if err := rows.Scan(&m.Seq, &m.TS, &m.Received, &kind, &flags, &m.Payload); err != nil {
			rows.Close()
			return err
		}
		m.Kind, m.Flags = devices.Kind(kind), devices.Flags(flags)
		recent = append(recent, m)
	}
	rows.Close()
	latest := store.LatestFrom(recent)
	w.sums.Update(d, func(dv *devices.Device) {
		dv.MessageCount = max(dv.MessageCount-deleted, 0)
		dv.Latest = latest
	})
	latestJSON, _ := json.Marshal(latest)
	_, err = w.conn.ExecContext(ctx, `UPDATE devices SET message_count = ?, latest = ? WHERE id = ?`, d.Device.MessageCount, string(latestJSON), d.ID)
	return describe(err)
}
