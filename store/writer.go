package store

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
	DefaultMaxBatch  = 4096
	DefaultQueueSize = 16384
)

// rowsPerInsert is how many rows one INSERT statement carries. Multi-row
// inserts cut the per-statement cost of database/sql, which dominates with
// small rows; 8 columns x 64 rows stays far below SQLite's parameter limit.
const rowsPerInsert = 64

// Writer is the only goroutine that writes messages. It takes Pending
// messages from a bounded queue and commits them in groups: as soon as one
// commit is done it commits everything that arrived meanwhile (up to
// MaxBatch), so batches are small at low load and grow with load, and no
// timer is ever waited out. After each commit a dispatch goroutine calls
// every Done callback in order (which writes the PUBACKs) and then OnCommit.
//
// A failed commit is retried with backoff until it succeeds or the Writer is
// closed: nothing accepted is dropped, and while the store is failing the
// queue fills and producers wait (QoS 1 back-pressure).
type Writer struct {
	// DB is the opened database. Required.
	DB *DB
	// MaxBatch caps the messages in one transaction. Default DefaultMaxBatch.
	MaxBatch int
	// QueueSize is the capacity of the ingest queue, in messages. Default DefaultQueueSize.
	QueueSize int
	// OnCommit receives each committed batch, in sequence order, after the
	// Done callbacks. The slice is shared and must not be modified. Optional.
	OnCommit func([]devices.Message)
	// Stats counts stored messages. Optional.
	Stats *devices.Stats
	// Logger defaults to slog.Default() with component=writer.
	Logger *slog.Logger

	q        chan *devices.Pending
	dispatch chan *batch
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	closed   atomic.Bool

	conn     *sql.Conn
	full     *sql.Stmt         // INSERT of rowsPerInsert rows
	partial  map[int]*sql.Stmt // INSERT of fewer rows, by count
	args     []any
	lastSeq  atomic.Int64
	devs     map[string]*devState
	failing  atomic.Bool
	lastErr  atomic.Pointer[string]
	commitNs atomic.Int64 // duration of the latest commit
}

type devState struct {
	id        int64
	firstSeen int64
	lastSeen  int64
	count     int64
	lastSeq   devices.Seq
	status    string
	statusAt  int64
	latest    map[string]devices.Latest
	dirty     bool
}

type batch struct {
	pending []*devices.Pending
	msgs    []devices.Message
}

// NewWriter returns a Writer on db with every field at its default.
func NewWriter(db *DB) *Writer {
	return &Writer{
		DB:        db,
		MaxBatch:  DefaultMaxBatch,
		QueueSize: DefaultQueueSize,
		Logger:    slog.Default().With("component", "writer"),
	}
}

// Open loads the device table and the sequence high-water mark, prepares
// the statements and starts the writer and dispatch goroutines.
func (w *Writer) Open() error {
	if w.DB == nil || w.DB.write == nil {
		return errors.New("open writer: opened DB required")
	}
	if w.MaxBatch <= 0 {
		w.MaxBatch = DefaultMaxBatch
	}
	if w.QueueSize <= 0 {
		w.QueueSize = DefaultQueueSize
	}
	if w.Logger == nil {
		w.Logger = slog.Default().With("component", "writer")
	}
	if w.Stats == nil {
		w.Stats = new(devices.Stats)
	}
	ctx := context.Background()
	var err error
	if w.conn, err = w.DB.write.Conn(ctx); err != nil {
		return fmt.Errorf("open writer: %w", describe(err))
	}
	if err := w.load(ctx); err != nil {
		w.conn.Close()
		return fmt.Errorf("open writer: %w", err)
	}
	if w.full, err = w.conn.PrepareContext(ctx, insertSQL(rowsPerInsert)); err != nil {
		w.conn.Close()
		return fmt.Errorf("open writer: %w", err)
	}
	w.partial = make(map[int]*sql.Stmt)
	w.args = make([]any, 0, 8*rowsPerInsert)
	w.q = make(chan *devices.Pending, w.QueueSize)
	w.dispatch = make(chan *batch, 4)
	w.stopping = make(chan struct{})
	w.wg.Add(2)
	go w.writeLoop()
	go w.dispatchLoop()
	return nil
}

func insertSQL(rows int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO messages (seq, device_id, ts, received, topic, qos, flags, payload) VALUES `)
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?,?,?,?,?,?,?)`)
	}
	return b.String()
}

// load reads the device table into memory and the highest sequence number
// ever assigned (kept in meta, so deleting the newest rows never lets a
// number be reused).
func (w *Writer) load(ctx context.Context) error {
	var last sql.NullInt64
	err := w.conn.QueryRowContext(ctx, `SELECT max(coalesce((SELECT value FROM meta WHERE key = 'last_seq'), 0), coalesce((SELECT max(seq) FROM messages), 0))`).Scan(&last)
	if err != nil {
		return describe(err)
	}
	w.lastSeq.Store(last.Int64)
	return w.loadDevices(ctx)
}

func (w *Writer) loadDevices(ctx context.Context) error {
	rows, err := w.conn.QueryContext(ctx, `SELECT id, name, first_seen, last_seen, message_count, last_seq, status, status_at, latest FROM devices`)
	if err != nil {
		return describe(err)
	}
	defer rows.Close()
	w.devs = make(map[string]*devState)
	for rows.Next() {
		d := &devState{}
		var name, latest string
		if err := rows.Scan(&d.id, &name, &d.firstSeen, &d.lastSeen, &d.count, &d.lastSeq, &d.status, &d.statusAt, &latest); err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(latest), &d.latest); err != nil || d.latest == nil {
			d.latest = make(map[string]devices.Latest)
		}
		w.devs[name] = d
	}
	return rows.Err()
}

// LastSeq returns the highest committed sequence number.
func (w *Writer) LastSeq() devices.Seq { return devices.Seq(w.lastSeq.Load()) }

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

// LastCommit returns how long the latest commit took.
func (w *Writer) LastCommit() time.Duration { return time.Duration(w.commitNs.Load()) }

var _ devices.MessageWriter = (*Writer)(nil)

// Write implements devices.MessageWriter.
func (w *Writer) Write(ctx context.Context, p *devices.Pending) error {
	if w.closed.Load() {
		return devices.ErrClosed
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
	select {
	case w.q <- p:
		return nil
	default:
		return devices.ErrQueueFull
	}
}

// Close stops taking messages, commits and dispatches everything already
// queued, and waits for both goroutines. ctx bounds the wait; on expiry the
// remaining messages are failed (their devices were not acknowledged and
// will resend). It does not close the DB.
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
		<-done // the loops give up retrying once stopping and ctx are both done
	}
	for _, s := range w.partial {
		s.Close()
	}
	if w.full != nil {
		w.full.Close()
	}
	if cerr := w.conn.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (w *Writer) writeLoop() {
	defer w.wg.Done()
	defer close(w.dispatch)
	for {
		var first *devices.Pending
		select {
		case first = <-w.q:
		case <-w.stopping:
			// Drain what was accepted before Close.
			for {
				b := w.collect(nil)
				if len(b.pending) == 0 {
					return
				}
				w.commitRetrying(b)
			}
		}
		w.commitRetrying(w.collect(first))
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
// short grace and fails the batch.
func (w *Writer) commitRetrying(b *batch) {
	backoff := 50 * time.Millisecond
	failures := 0
	var giveUp <-chan time.Time
	for {
		start := time.Now()
		err := w.commit(b)
		if err == nil {
			w.commitNs.Store(int64(time.Since(start)))
			if failures > 0 {
				w.Logger.Info("store recovered", "failed_attempts", failures)
			}
			w.failing.Store(false)
			w.dispatch <- b
			return
		}
		failures++
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
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// commit writes b in one transaction. On success it fills b.msgs with the
// committed messages and advances the sequence; on failure it leaves the
// in-memory state as it was.
func (w *Writer) commit(b *batch) (err error) {
	ctx := context.Background()
	now := w.DB.Now().UnixMilli()
	seq := w.lastSeq.Load()
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return describe(err)
	}
	defer func() {
		if err != nil {
			if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
			// The device cache may hold rows that were rolled back.
			if lerr := w.loadDevices(ctx); lerr != nil {
				err = errors.Join(err, fmt.Errorf("reload devices: %w", lerr))
			}
		}
	}()

	msgs := make([]devices.Message, len(b.pending))
	touched := make([]*devState, 0, 16)
	w.args = w.args[:0]
	rows := 0
	for i, p := range b.pending {
		m := &msgs[i]
		*m = p.Message
		seq++
		m.Seq = devices.Seq(seq)
		d, err := w.device(ctx, tx, m.Device, now)
		if err != nil {
			return err
		}
		if !d.dirty {
			d.dirty = true
			touched = append(touched, d)
		}
		d.apply(m)
		w.args = append(w.args, seq, d.id, m.TS, m.Received, m.Topic, int64(m.QoS), int64(m.Flags), payloadArg(m.Payload))
		if rows++; rows == rowsPerInsert {
			if _, err := tx.StmtContext(ctx, w.full).ExecContext(ctx, w.args...); err != nil {
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
		if _, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, w.args...); err != nil {
			return describe(err)
		}
	}
	for _, d := range touched {
		d.dirty = false
		latest, _ := json.Marshal(d.latest)
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen = ?, message_count = ?, last_seq = ?, status = ?, status_at = ?, latest = ? WHERE id = ?`,
			d.lastSeen, d.count, d.lastSeq, d.status, d.statusAt, string(latest), d.id); err != nil {
			return describe(err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, seq); err != nil {
		return describe(err)
	}
	if err := tx.Commit(); err != nil {
		return describe(err)
	}
	w.lastSeq.Store(seq)
	b.msgs = msgs
	return nil
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

// device returns the cached state of name, inserting the device row first
// when it is new.
func (w *Writer) device(ctx context.Context, tx *sql.Tx, name string, now int64) (*devState, error) {
	if d, ok := w.devs[name]; ok {
		return d, nil
	}
	d := &devState{firstSeen: now, lastSeen: now, latest: make(map[string]devices.Latest)}
	if err := tx.QueryRowContext(ctx, `INSERT INTO devices (name, first_seen, last_seen) VALUES (?, ?, ?) RETURNING id`, name, now, now).Scan(&d.id); err != nil {
		return nil, describe(err)
	}
	w.devs[name] = d
	return d, nil
}

// apply folds one message into the device's summary.
func (d *devState) apply(m *devices.Message) {
	if d.count == 0 {
		d.firstSeen = m.Received
	}
	d.count++
	d.lastSeen = max(d.lastSeen, m.Received)
	d.lastSeq = m.Seq
	if m.Kind == devices.KindStatus {
		d.status = statusText(m.Payload)
		d.statusAt = m.Received
	}
	for _, v := range m.Values {
		if old, ok := d.latest[v.Name]; ok && old.TS > v.TS {
			continue
		}
		d.latest[v.Name] = devices.Latest{Value: v.Value, TS: v.TS, Seq: m.Seq}
	}
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
