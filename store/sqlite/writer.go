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
)

// Defaults for Writer fields.
const (
	DefaultMaxBatch       = 4096
	DefaultQueueSize      = 16384
	DefaultFlushInterval  = time.Second
	DefaultRollupInterval = 5 * time.Second
	// DefaultLinger is Writer.Linger's default.
	DefaultLinger = 2 * time.Millisecond
	// DefaultMaxMetrics is how many metric names one device may have.
	DefaultMaxMetrics = 1000
	// DefaultMaxMetricName is the longest metric name accepted, in bytes.
	DefaultMaxMetricName = 128
	// maxLatestValue is the longest value kept among a device's latest
	// values, in bytes of JSON; longer ones stay in their message only.
	maxLatestValue = 1024
	// DefaultRetentionInterval is how often retention runs.
	DefaultRetentionInterval = time.Minute
)

// lingerRows is the queue length below which the writer lingers.
const lingerRows = 64

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

// Writer is the only goroutine that writes messages. It takes Pending
// messages from a bounded queue and commits them in groups: as soon as one
// commit is done it commits everything that arrived meanwhile (up to
// MaxBatch), so batches are small at low load and grow with load, and no
// timer is ever waited out. After each commit a dispatch goroutine calls
// every Done callback in order (the broker's acker then writes the PUBACKs)
// and then OnCommit.
//
// Device summaries (counts, last seen, latest values) live in memory, are
// served from there, and are saved every FlushInterval in rounds of at most
// devicesPerFlush devices per commit. Because they are derived from the
// messages, a crash loses nothing: Open folds in again every message above
// meta.summary_seq.
//
// A failed commit is retried with backoff until it succeeds or the Writer is
// closed: nothing accepted is dropped, and while the store is failing the
// queue fills and producers wait (QoS 1 back-pressure).
type Writer struct {
	// DB is the opened database. Required.
	DB *DB
	// MaxBatch caps the messages in one transaction. Default DefaultMaxBatch.
	MaxBatch int
	// Linger is how long the writer waits for more messages before a
	// commit when fewer than 64 are queued: at most that much latency for
	// fewer, larger commits. Default DefaultLinger; 0 commits at once.
	Linger time.Duration
	// QueueSize is the capacity of the ingest queue, in messages. Default DefaultQueueSize.
	QueueSize int
	// FlushInterval is how often changed device summaries are saved. Default
	// DefaultFlushInterval.
	FlushInterval time.Duration
	// RollupInterval is how often rollups of new messages are written to the
	// database (series add the messages above them meanwhile). Default
	// DefaultRollupInterval.
	RollupInterval time.Duration
	// OnCommit receives each committed batch, in sequence order, after the
	// Done callbacks. The slice is shared and must not be modified. Optional.
	OnCommit func([]devices.Message)
	// Stats counts stored messages. Optional.
	Stats *devices.Stats
	// MaxMetrics caps the metric names of one device: a message that would
	// add names past it is refused (devices.ErrTooManyMetrics), so that one
	// device cannot grow the hub's memory, its latest values and its
	// rollups without bound. Default DefaultMaxMetrics.
	MaxMetrics int
	// MaxMetricName caps the length of a metric name, in bytes; a message
	// with a longer one is refused (devices.ErrMetricName). Default
	// DefaultMaxMetricName.
	MaxMetricName int
	// Retention deletes messages whose ts (the reading's time) is older than
	// this, in whole hours, with their rollups; 0 keeps everything. Devices
	// may override it (SetRetention).
	Retention time.Duration
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
	// Observe, when set, is told the size and duration of every commit
	// that stored messages (metrics). It runs on the write loop: keep it cheap.
	Observe func(rows int, d time.Duration)
	// Logger defaults to slog.Default() with component=writer.
	Logger *slog.Logger

	q        chan *devices.Pending
	ops      chan func() // maintenance run on the write loop (deletes, retention)
	dispatch chan *batch
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	closed   atomic.Bool

	lock    *writerLock // one Writer per database file
	conn    *sql.Conn
	full    *sql.Stmt         // INSERT of rowsPerInsert rows
	partial map[int]*sql.Stmt // INSERT of fewer rows, by count
	update  *sql.Stmt         // UPDATE of one device's summary
	setMeta *sql.Stmt         // upsert of a meta counter
	upsert  *sql.Stmt         // upsert of a rollup bucket (upsertRollup)
	args    []any
	lastSeq atomic.Int64

	mu   sync.RWMutex // guards devs for readers; only the write loop changes it
	devs map[string]*devState

	namesMu sync.Mutex
	names   map[string]map[string]struct{} // metric names admitted per device (admit)

	roll      rollups                  // write loop only
	overrides map[string]time.Duration // per-device retention; write loop only

	round    []*devState // devices left to save in the current flush round
	roundSeq int64       // every message up to this seq is in the round's devices

	failing  atomic.Bool
	lastErr  atomic.Pointer[string]
	commitNs atomic.Int64 // duration of the latest commit
	commits  atomic.Int64 // transactions that stored messages
	failures atomic.Int64 // failed commit attempts

	rollupDropped  atomic.Int64 // rollup buckets that could not be written
	rollupThrottle devices.Throttle
}

type devState struct {
	id        int64
	name      string
	dev       devices.Device // FirstSeen .. Latest; ID is name
	dirty     bool           // changed since last saved
	trimmedTo int64          // retention: no message older than this ts is left (write loop only)
}

type batch struct {
	pending []*devices.Pending
	msgs    []devices.Message
}

// NewWriter returns a Writer on db with every field at its default.
func NewWriter(db *DB) *Writer {
	return &Writer{
		DB:             db,
		MaxBatch:       DefaultMaxBatch,
		Linger:         DefaultLinger,
		QueueSize:      DefaultQueueSize,
		FlushInterval:  DefaultFlushInterval,
		RollupInterval: DefaultRollupInterval,
		MaxMetrics:     DefaultMaxMetrics,
		MaxMetricName:  DefaultMaxMetricName,
		Logger:         slog.Default().With("component", "writer"),
	}
}

// Open loads the device summaries and the sequence high-water mark, folds
// in messages the summaries do not yet reflect, prepares the statements and
// starts the writer and dispatch goroutines.
func (w *Writer) Open() (err error) {
	if w.DB == nil || w.DB.write == nil {
		return errors.New("open writer: opened DB required")
	}
	if w.MaxBatch <= 0 {
		w.MaxBatch = DefaultMaxBatch
	}
	if w.QueueSize <= 0 {
		w.QueueSize = DefaultQueueSize
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
	if w.MaxMetrics <= 0 {
		w.MaxMetrics = DefaultMaxMetrics
	}
	if w.MaxMetricName <= 0 {
		w.MaxMetricName = DefaultMaxMetricName
	}
	if w.Logger == nil {
		w.Logger = slog.Default().With("component", "writer")
	}
	if w.Stats == nil {
		w.Stats = new(devices.Stats)
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
	if err := w.loadOverrides(ctx); err != nil {
		return fmt.Errorf("open writer: %w", err)
	}
	w.q = make(chan *devices.Pending, w.QueueSize)
	w.ops = make(chan func())
	w.dispatch = make(chan *batch, 4)
	w.stopping = make(chan struct{})
	w.wg.Add(2)
	go w.writeLoop()
	go w.dispatchLoop()
	return nil
}

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
	w.lastSeq.Store(max(last, maxSeq.Int64))
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
	w.devs = make(map[string]*devState)
	byID := make(map[int64]*devState)
	for rows.Next() {
		d := &devState{}
		var latest string
		dv := &d.dev
		if err := rows.Scan(&d.id, &d.name, &dv.FirstSeen, &dv.LastSeen, &dv.MessageCount, &dv.LastSeq, &dv.Status, &dv.StatusAt, &latest); err != nil {
			return err
		}
		dv.ID = d.name
		if err := json.Unmarshal([]byte(latest), &dv.Latest); err != nil || dv.Latest == nil {
			dv.Latest = make(map[string]devices.Latest)
		}
		w.devs[d.name] = d
		byID[d.id] = d
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows.Close()
	if err := w.fold(ctx, byID); err != nil {
		return err
	}
	w.names = make(map[string]map[string]struct{}, len(w.devs))
	for name, d := range w.devs {
		set := make(map[string]struct{}, len(d.dev.Latest))
		for k := range d.dev.Latest {
			set[k] = struct{}{}
		}
		w.names[name] = set
	}
	return nil
}

// admit checks m's metric names against MaxMetricName and the device's
// MaxMetrics, and records the new ones, before m is queued: the names of
// messages still in the queue count already, so the cap holds exactly.
func (w *Writer) admit(m *devices.Message) error {
	if len(m.Values) == 0 {
		return nil
	}
	for _, v := range m.Values {
		if len(v.Name) > w.MaxMetricName {
			return fmt.Errorf("%w: %d bytes, at most %d", devices.ErrMetricName, len(v.Name), w.MaxMetricName)
		}
	}
	w.namesMu.Lock()
	defer w.namesMu.Unlock()
	set := w.names[m.Device]
	fresh := 0
	for _, v := range m.Values {
		if _, ok := set[v.Name]; !ok {
			fresh++ // a repeated new name counts twice; harmless and rare
		}
	}
	if fresh == 0 {
		return nil
	}
	if len(set)+fresh > w.MaxMetrics {
		return fmt.Errorf("%w: device %q has %d, at most %d", devices.ErrTooManyMetrics, m.Device, len(set), w.MaxMetrics)
	}
	if set == nil {
		set = make(map[string]struct{}, len(m.Values))
		w.names[m.Device] = set
	}
	for _, v := range m.Values {
		set[v.Name] = struct{}{}
	}
	return nil
}

// forgetNames drops a deleted device's admitted metric names.
func (w *Writer) forgetNames(device string) {
	w.namesMu.Lock()
	delete(w.names, device)
	w.namesMu.Unlock()
}

// fold applies the messages above meta.summary_seq to the device summaries.
// Each device skips what its saved row already counts (seq <= its last_seq),
// so folding twice changes nothing.
func (w *Writer) fold(ctx context.Context, byID map[int64]*devState) error {
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
		if d == nil || m.Seq <= d.dev.LastSeq {
			continue
		}
		m.Kind, m.Flags = devices.Kind(kind), devices.Flags(flags)
		if m.Kind == devices.KindTelemetry && m.IsJSON() {
			_, m.Values, _ = devices.DecodePayload(m.Payload, m.Received)
		}
		d.apply(&m)
		n++
	}
	if n > 0 {
		w.Logger.Info("folded messages into device summaries", "messages", n, "after_seq", from)
	}
	return rows.Err()
}

// LastSeq returns the highest committed sequence number.
func (w *Writer) LastSeq() devices.Seq { return devices.Seq(w.lastSeq.Load()) }

// Device returns the current summary of one device, or ErrNotFound.
func (w *Writer) Device(id string) (*devices.Device, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	d, ok := w.devs[id]
	if !ok || d.dev.MessageCount == 0 {
		return nil, fmt.Errorf("device %q: %w", id, devices.ErrNotFound)
	}
	return d.snapshot(), nil
}

// Devices returns the current summaries of every device, in no order.
func (w *Writer) Devices() []*devices.Device {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := make([]*devices.Device, 0, len(w.devs))
	for _, d := range w.devs {
		if d.dev.MessageCount > 0 {
			out = append(out, d.snapshot())
		}
	}
	return out
}

// Activity lists every device's last-seen time and status, cheaply (no
// latest values), for devices.Presence.
func (w *Writer) Activity() []devices.Activity {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := make([]devices.Activity, 0, len(w.devs))
	for _, d := range w.devs {
		out = append(out, devices.Activity{ID: d.name, LastSeen: d.dev.LastSeen, Status: d.dev.Status, StatusAt: d.dev.StatusAt})
	}
	return out
}

// ActivityOf returns one device's Activity.
func (w *Writer) ActivityOf(id string) (devices.Activity, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	d, ok := w.devs[id]
	if !ok {
		return devices.Activity{}, false
	}
	return devices.Activity{ID: d.name, LastSeen: d.dev.LastSeen, Status: d.dev.Status, StatusAt: d.dev.StatusAt}, true
}

func (d *devState) snapshot() *devices.Device {
	c := d.dev
	c.Latest = make(map[string]devices.Latest, len(d.dev.Latest))
	for k, v := range d.dev.Latest {
		c.Latest[k] = v
	}
	return &c
}

// CommitFailures returns how many commit attempts failed (each is retried).
func (w *Writer) CommitFailures() int64 { return w.failures.Load() }

// Healthy reports whether the latest commit succeeded, and the latest error.
func (w *Writer) Healthy() (bool, string) {
	if !w.failing.Load() {
		return true, ""
	}
	if p := w.lastErr.Load(); p != nil {
		return false, *p
	}
	return false, "commit failing"
}

// QueueLen returns the number of messages waiting in the queue.
func (w *Writer) QueueLen() int { return len(w.q) }

// Commits returns how many transactions have stored messages so far.
func (w *Writer) Commits() int64 { return w.commits.Load() }

// LastCommit returns how long the latest commit took.
func (w *Writer) LastCommit() time.Duration { return time.Duration(w.commitNs.Load()) }

var (
	_ devices.MessageWriter = (*Writer)(nil)
	_ devices.DataDeleter   = (*Writer)(nil)
)

// Write implements devices.MessageWriter.
func (w *Writer) Write(ctx context.Context, p *devices.Pending) error {
	if w.closed.Load() {
		return devices.ErrClosed
	}
	if err := w.admit(&p.Message); err != nil {
		return err
	}
	select {
	case w.q <- p:
		return nil
	case <-w.stopping:
		return devices.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TryWrite implements devices.MessageWriter.
func (w *Writer) TryWrite(p *devices.Pending) error {
	if w.closed.Load() {
		return devices.ErrClosed
	}
	if err := w.admit(&p.Message); err != nil {
		return err
	}
	select {
	case w.q <- p:
		return nil
	default:
		return devices.ErrQueueFull
	}
}

// Close stops taking messages, commits and dispatches everything already
// queued, saves every device summary and waits for both goroutines. A batch
// that keeps failing is given up 2 s after Close begins (its devices were
// not acknowledged and will resend); when ctx ends before the goroutines,
// Close still waits for them but returns ctx's error. It does not close the
// DB.
func (w *Writer) Close(ctx context.Context) error {
	if w.stopping == nil {
		return nil
	}
	w.closed.Store(true)
	w.stopOnce.Do(func() { close(w.stopping) })
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("close writer: %w", ctx.Err())
		<-done // the loop gives up retrying shortly after stopping
	}
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
	for _, s := range w.partial {
		s.Close()
	}
	for _, s := range []*sql.Stmt{w.full, w.update, w.setMeta, w.upsert} {
		if s != nil {
			s.Close()
		}
	}
}

func (w *Writer) writeLoop() {
	defer w.wg.Done()
	defer close(w.dispatch)
	tick := time.NewTicker(w.FlushInterval)
	defer tick.Stop()
	retainTick := time.NewTicker(w.RetentionInterval)
	defer retainTick.Stop()
	retain := retainTick.C
	for {
		var first *devices.Pending
		select {
		case first = <-w.q:
		case op := <-w.ops:
			op()
			continue
		case <-retain:
			if res, err := w.retain(time.Now()); err != nil {
				w.Logger.Error("retention pass failed; will retry", "error", err)
			} else if res.Deleted > 0 {
				w.Logger.Info("retention deleted old messages", "messages", res.Deleted, "devices", res.Devices, "by_size", res.BySize, "took", res.Took, "longest_step", res.LongestStep)
			}
			continue
		case <-tick.C:
			w.startRound()
			// Idle: save the round's summaries without waiting for messages.
			for len(w.round) > 0 && len(w.q) == 0 {
				w.commitRetrying(&batch{})
			}
			// A round of rollup writes begins every RollupInterval; series
			// add the raw messages above the rows meanwhile.
			if err := w.maintainRollups(context.Background(), false); err != nil {
				w.Logger.Error("building rollups failed; will retry", "error", err)
			}
			for w.roll.round != nil && len(w.q) == 0 {
				if w.roll.inline {
					w.commitRetrying(&batch{}) // carries the next rollup step
				} else if !w.stepRollups() {
					break
				}
			}
			continue
		case <-w.stopping:
			// Commit what was accepted before Close, then save every summary.
			for {
				b := w.collect(nil)
				if len(b.pending) == 0 {
					break
				}
				w.commitRetrying(b)
			}
			w.startRound()
			for len(w.round) > 0 {
				if !w.commitRetrying(&batch{}) {
					break
				}
			}
			if err := w.flushRollups(context.Background()); err != nil {
				w.Logger.Error("saving rollups at shutdown failed; they are rebuilt at the next start", "error", err)
			}
			return
		}
		if w.Linger > 0 && len(w.q) < lingerRows {
			// Few messages: wait a moment for more, so that a thousand
			// devices at a moderate rate share commits instead of paying
			// one each. The busier the hub, the less this waits.
			t := time.NewTimer(w.Linger)
			select {
			case <-t.C:
			case <-w.stopping:
				t.Stop()
			}
		}
		w.commitRetrying(w.collect(first))
		if !w.roll.inline {
			w.stepRollups()
		}
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

// startRound begins saving every changed device summary, unless a round is
// still under way.
func (w *Writer) startRound() {
	if len(w.round) > 0 {
		return
	}
	w.roundSeq = w.lastSeq.Load()
	for _, d := range w.devs {
		if d.dirty {
			w.round = append(w.round, d)
		}
	}
	if len(w.round) == 0 {
		// Nothing changed: every summary is complete up to roundSeq.
		w.round = nil
	}
}

// collect takes first (if any) plus whatever is queued, up to MaxBatch.
func (w *Writer) collect(first *devices.Pending) *batch {
	b := &batch{pending: make([]*devices.Pending, 0, min(w.MaxBatch, len(w.q)+1))}
	if first != nil {
		b.pending = append(b.pending, first)
	}
	for len(b.pending) < w.MaxBatch {
		select {
		case p := <-w.q:
			b.pending = append(b.pending, p)
		default:
			return b
		}
	}
	return b
}

// commitRetrying commits b, retrying with exponential backoff (50 ms to 5 s)
// while the store fails. Once the Writer is stopping it gives up after a
// short grace, fails the batch and returns false.
func (w *Writer) commitRetrying(b *batch) bool {
	backoff := 50 * time.Millisecond
	failures := 0
	var giveUp <-chan time.Time
	for {
		start := time.Now()
		err := w.commit(b)
		if err == nil {
			d := time.Since(start)
			w.commitNs.Store(int64(d))
			if w.Observe != nil && len(b.pending) > 0 {
				w.Observe(len(b.pending), d)
			}
			if failures > 0 {
				w.Logger.Info("store recovered", "failed_attempts", failures)
			}
			w.failing.Store(false)
			if len(b.pending) > 0 {
				w.commits.Add(1)
				w.dispatch <- b
			}
			return true
		}
		failures++
		w.failures.Add(1)
		msg := err.Error()
		w.lastErr.Store(&msg)
		w.failing.Store(true)
		if failures == 1 || failures%20 == 0 {
			w.Logger.Error("commit failed; retrying", "error", err, "messages", len(b.pending), "attempts", failures)
		}
		if giveUp == nil {
			select {
			case <-w.stopping:
				giveUp = time.After(2 * time.Second)
			default:
			}
		}
		select {
		case <-time.After(backoff):
		case <-giveUp:
			w.Logger.Error("giving up on batch at shutdown; its devices were not acknowledged", "messages", len(b.pending), "error", err)
			for _, p := range b.pending {
				w.Stats.Rejected(devices.ReasonStoreError)
				if p.Done != nil {
					p.Done(&p.Message, err)
				}
			}
			return false
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// commit writes b's messages, plus the next part of a flush round, in one
// transaction. Only after the commit succeeds does it advance the sequence
// and the in-memory summaries, so a failed attempt leaves no trace.
func (w *Writer) commit(b *batch) (err error) {
	ctx := context.Background()
	seq := w.lastSeq.Load()
	// The transaction is begun and ended by hand on the writer's own
	// connection, so that the statements prepared on it run as they are:
	// database/sql's Tx.StmtContext prepares a Conn's statement again for
	// every transaction, the 576-placeholder INSERT included.
	if _, err := w.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return describe(err)
	}
	tx := w.conn
	var created []string
	defer func() {
		if err != nil {
			if _, rerr := w.conn.ExecContext(ctx, `ROLLBACK`); rerr != nil && !strings.Contains(rerr.Error(), "no transaction is active") {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
			w.mu.Lock()
			for _, name := range created { // their rows were rolled back
				delete(w.devs, name)
			}
			w.mu.Unlock()
		}
	}()

	msgs := make([]devices.Message, len(b.pending))
	ds := make([]*devState, len(b.pending))
	w.args = w.args[:0]
	rows := 0
	for i, p := range b.pending {
		m := &msgs[i]
		*m = p.Message
		seq++
		m.Seq = devices.Seq(seq)
		d, isNew, err := w.device(ctx, tx, m.Device, m.Received)
		if err != nil {
			return err
		}
		if isNew {
			created = append(created, m.Device)
		}
		ds[i] = d
		w.args = append(w.args, seq, d.id, m.TS, m.Received, m.Topic, int64(m.Kind), int64(m.QoS), int64(m.Flags), payloadArg(m.Payload))
		if rows++; rows == rowsPerInsert {
			if _, err := w.full.ExecContext(ctx, w.args...); err != nil {
				return describe(err)
			}
			w.args, rows = w.args[:0], 0
		}
	}
	if rows > 0 {
		stmt, err := w.partialStmt(ctx, rows)
		if err != nil {
			return err
		}
		if _, err := stmt.ExecContext(ctx, w.args...); err != nil {
			return describe(err)
		}
	}
	if len(msgs) > 0 {
		if _, err := w.setMeta.ExecContext(ctx, "last_seq", seq); err != nil {
			return describe(err)
		}
	}
	flushed, err := w.flushPart(ctx)
	if err != nil {
		return err
	}
	rolled := w.rollupInline(ctx)
	if _, err := w.conn.ExecContext(ctx, `COMMIT`); err != nil {
		return describe(err)
	}
	w.rollupCommitted(rolled)

	w.mu.Lock()
	for i := range msgs {
		ds[i].apply(&msgs[i])
	}
	w.mu.Unlock()
	if len(msgs) > 0 {
		ids := make([]int64, len(ds))
		for i, d := range ds {
			ids[i] = d.id
		}
		w.foldCommitted(msgs, ids)
	}
	if w.round = w.round[flushed:]; len(w.round) == 0 {
		w.round = nil
	}
	w.lastSeq.Store(seq)
	b.msgs = msgs
	return nil
}

// flushPart saves up to devicesPerFlush summaries of the current round in
// tx, and records summary_seq when the round is complete. It returns how
// many devices it saved; the caller drops them from the round after commit.
func (w *Writer) flushPart(ctx context.Context) (int, error) {
	if w.round == nil {
		return 0, nil
	}
	update := w.update
	n, bytes := 0, 0
	for _, d := range w.round[:min(len(w.round), devicesPerFlush)] {
		if bytes >= summaryBytesPerFlush {
			break // devices with many metrics: the rest wait for the next commit
		}
		dv := &d.dev
		latest, _ := json.Marshal(dv.Latest)
		if _, err := update.ExecContext(ctx, dv.FirstSeen, dv.LastSeen, dv.MessageCount, dv.LastSeq, dv.Status, dv.StatusAt, string(latest), d.id); err != nil {
			return 0, describe(err)
		}
		n++
		bytes += len(latest)
	}
	if n == len(w.round) {
		if _, err := w.setMeta.ExecContext(ctx, "summary_seq", w.roundSeq); err != nil {
			return 0, describe(err)
		}
	}
	// Marked clean now; a failed commit leaves them in the round to retry.
	for _, d := range w.round[:n] {
		d.dirty = false
	}
	return n, nil
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
// inside a transaction begun by hand (commit).
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// device returns the state of name, inserting the device row first when it
// is new.
func (w *Writer) device(ctx context.Context, tx rowQuerier, name string, now int64) (*devState, bool, error) {
	if d, ok := w.devs[name]; ok {
		return d, false, nil
	}
	d := &devState{name: name, dev: devices.Device{ID: name, FirstSeen: now, LastSeen: now, Latest: make(map[string]devices.Latest)}}
	if err := tx.QueryRowContext(ctx, `INSERT INTO devices (name, first_seen, last_seen) VALUES (?, ?, ?) RETURNING id`, name, now, now).Scan(&d.id); err != nil {
		return nil, false, describe(err)
	}
	w.mu.Lock()
	w.devs[name] = d
	w.mu.Unlock()
	return d, true, nil
}

// apply folds one committed message into the device's summary.
func (d *devState) apply(m *devices.Message) {
	dv := &d.dev
	if dv.MessageCount == 0 {
		dv.FirstSeen = m.Received
	}
	dv.MessageCount++
	dv.LastSeen = max(dv.LastSeen, m.Received)
	dv.LastSeq = m.Seq
	if m.Kind == devices.KindStatus {
		dv.Status = statusText(m.Payload)
		dv.StatusAt = m.Received
	}
	for _, v := range m.Values {
		if old, ok := dv.Latest[v.Name]; ok && old.TS > v.TS || len(v.Value) > maxLatestValue {
			continue
		}
		dv.Latest[v.Name] = devices.Latest{Value: v.Value, TS: v.TS, Seq: m.Seq}
	}
	d.dirty = true
}

// statusText reads a status payload: a bare word ("online") or a JSON
// string or {"status":"online"}; anything else is kept as "unknown".
func statusText(p []byte) string {
	s := strings.TrimSpace(string(p))
	var js string
	if json.Unmarshal(p, &js) == nil {
		s = js
	} else {
		var obj struct{ Status string }
		if json.Unmarshal(p, &obj) == nil && obj.Status != "" {
			s = obj.Status
		}
	}
	if s == "" || len(s) > 32 || strings.ContainsAny(s, "{}[]\"\n") {
		return "unknown"
	}
	return s
}

func (w *Writer) dispatchLoop() {
	defer w.wg.Done()
	for b := range w.dispatch {
		flagged := 0
		for i, p := range b.pending {
			if b.msgs[i].Flags != 0 {
				flagged++
			}
			if p.Done != nil {
				p.Done(&b.msgs[i], nil)
			}
		}
		w.Stats.Stored(len(b.msgs), flagged)
		if w.OnCommit != nil {
			w.OnCommit(b.msgs)
		}
	}
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
	err := w.run(ctx, func() (err error) { n, err = w.deleteMessages(op); return err })
	return n, err
}

// run runs fn on the write loop, between commits, and returns its error.
func (w *Writer) run(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	select {
	case w.ops <- func() { done <- fn() }:
	case <-w.stopping:
		return devices.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-done
}

// deleteMessages runs on the write loop.
func (w *Writer) deleteMessages(op deleteOp) (int64, error) {
	d, ok := w.devs[op.device]
	if !ok {
		return 0, fmt.Errorf("device %q: %w", op.device, devices.ErrNotFound)
	}
	ctx := context.Background()
	q := `DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE device_id = ?`
	args := []any{d.id}
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
		if len(w.q) > 0 { // let waiting messages in between chunks
			w.commitRetrying(w.collect(nil))
		}
	}
	if op.all {
		return total, w.dropDevice(ctx, d)
	}
	lo, hi := floorDiv(max(op.from, devices.MinTime), rollupHour)*rollupHour, (floorDiv(min(op.to, devices.MaxTime), rollupHour)+1)*rollupHour
	if err := w.rebuildRollups(ctx, d.id, lo, hi); err != nil {
		return total, err
	}
	return total, w.rebuildAfterDelete(ctx, d, total)
}

func (w *Writer) dropDevice(ctx context.Context, d *devState) error {
	for k := range w.roll.deltas {
		if k.device == d.id {
			delete(w.roll.deltas, k)
		}
	}
	if err := w.deleteDeviceRows(ctx, d.id); err != nil {
		return err
	}
	w.mu.Lock()
	delete(w.devs, d.name)
	w.mu.Unlock()
	w.forgetNames(d.name)
	for i, r := range w.round {
		if r == d {
			w.round = append(w.round[:i:i], w.round[i+1:]...)
			break
		}
	}
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
func (w *Writer) rebuildAfterDelete(ctx context.Context, d *devState, deleted int64) error {
	rows, err := w.conn.QueryContext(ctx, `SELECT seq, ts, received, kind, flags, payload FROM messages WHERE device_id = ? ORDER BY ts DESC, seq DESC LIMIT ?`, d.id, latestRebuildRows)
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
	latest := make(map[string]devices.Latest)
	for i := len(recent) - 1; i >= 0; i-- { // oldest first, so newer values win
		m := &recent[i]
		if m.Kind != devices.KindTelemetry || !m.IsJSON() {
			continue
		}
		_, values, _ := devices.DecodePayload(m.Payload, m.Received)
		for _, v := range values {
			if len(v.Value) > maxLatestValue {
				continue
			}
			if old, ok := latest[v.Name]; !ok || old.TS <= v.TS {
				latest[v.Name] = devices.Latest{Value: v.Value, TS: v.TS, Seq: m.Seq}
			}
		}
	}
	w.mu.Lock()
	d.dev.MessageCount = max(d.dev.MessageCount-deleted, 0)
	d.dev.Latest = latest
	d.dirty = true
	w.mu.Unlock()
	latestJSON, _ := json.Marshal(latest)
	dv := &d.dev
	_, err = w.conn.ExecContext(ctx, `UPDATE devices SET message_count = ?, latest = ? WHERE id = ?`, dv.MessageCount, string(latestJSON), d.id)
	return describe(err)
}
