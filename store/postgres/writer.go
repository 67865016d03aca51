package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// Defaults for Writer fields.
const (
	DefaultFlushInterval     = time.Second
	DefaultRetentionInterval = time.Minute
)

// Writer is the PostgreSQL backend of the ingest pipeline (store.Pipeline,
// whose fields it has). Each batch is one transaction: device rows first
// (inserted when new), then the batch's range of sequence numbers from the
// meta counter row (UPDATE ... RETURNING, which holds the row lock until
// COMMIT, so that committers take turns and every range is visible before
// the next one is handed out), then the rows by COPY, then COMMIT; the
// PUBACKs follow the COMMIT, as on SQLite.
//
// Device summaries live in memory (store.Summaries, shared with the
// readers) and are saved every FlushInterval in one statement; a start
// folds in again the messages above meta.summary_seq.
type Writer struct {
	store.Pipeline

	// DB is the opened database. Required.
	DB *DB
	// FlushInterval is how often changed device summaries are saved.
	// Default DefaultFlushInterval.
	FlushInterval time.Duration
	// Retention holds the retention settings: Retention.Hub deletes
	// messages whose ts is older than that; 0 keeps everything. Devices may
	// override it (SetRetention).
	store.Retention
	// RetentionInterval is how often retention runs. Default
	// DefaultRetentionInterval.
	RetentionInterval time.Duration
	// OnStatus receives each status event recorded by SetStatus, after it
	// is stored. Optional.
	OnStatus func(devices.StatusEvent)

	// OnCommit receives every hub's committed messages in seq order, from
	// the follower (the pipeline's own OnCommit stays unset). Optional.
	OnCommit func([]devices.Message)

	seq     int64 // highest seq this writer committed or loaded; write loop only
	sums    *store.Summaries
	closing atomic.Bool

	hubID      string     // this hub's mark on its notifications
	followMu   sync.Mutex // orders the follower and the writer's own commits
	stopFollow context.CancelFunc
	followDone chan struct{}
	leader     *pgxpool.Conn // holds leaderLock while this hub leads; write loop only
	leading    atomic.Bool   // leader != nil, for other goroutines
	unsure     int64         // the token of a commit whose outcome was lost; write loop only

	downlinkHook atomic.Pointer[DownlinkHook]
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
		DB:                db,
		FlushInterval:     DefaultFlushInterval,
		RetentionInterval: DefaultRetentionInterval,
	}
}

var _ store.Backend = (*Writer)(nil)

// Open loads the device summaries and the sequence counter, folds in the
// messages the summaries do not reflect yet and starts the pipeline.
func (w *Writer) Open(ctx context.Context) error {
	if w.DB == nil || w.DB.Pool == nil {
		return errors.New("open writer: opened DB required")
	}
	if w.FlushInterval <= 0 {
		w.FlushInterval = DefaultFlushInterval
	}
	if w.RetentionInterval <= 0 {
		w.RetentionInterval = DefaultRetentionInterval
	}
	if w.Logger == nil {
		w.Logger = slog.Default().With("component", "writer")
	}
	if err := w.load(ctx); err != nil {
		return fmt.Errorf("open writer: %w", err)
	}
	if err := w.OpenRetention(ctx, &w.Pipeline, w.DB.SQL, w.sums); err != nil {
		return fmt.Errorf("open writer: %w", err)
	}
	w.Every(w.FlushInterval, func(ctx context.Context) {
		if !w.lead(ctx) {
			return // another hub saves the summaries
		}
		if err := w.saveSummaries(ctx); err != nil {
			w.Logger.Error("saving device summaries failed; will retry", "error", err)
		}
	})
	w.Every(w.RetentionInterval, func(ctx context.Context) {
		if !w.lead(ctx) {
			return
		}
		w.DB.Pool.Exec(ctx, `DELETE FROM commit_tokens WHERE at < $1`, time.Now().Add(-time.Hour).UnixMilli())
		if res, err := w.retain(ctx, time.Now()); err != nil {
			w.Logger.Error("retention pass failed; will retry", "error", err)
		} else if res.Deleted > 0 {
			w.Logger.Info("retention deleted old messages", "messages", res.Deleted, "devices", res.Devices, "took", res.Took)
		}
	})
	w.sums.SetSeq(devices.Seq(w.seq))
	w.hubID = fmt.Sprintf("%x", rand.Uint64())
	fctx, stop := context.WithCancel(context.Background())
	w.stopFollow, w.followDone = stop, make(chan struct{})
	go w.follow(fctx)
	w.Pipeline.OnCommit = nil // the follower feeds the live view, every hub's messages
	w.Start(w, devices.Seq(w.seq), w.sums)
	return nil
}

// Summaries returns the device summaries the writer keeps, for readers.
func (w *Writer) Summaries() *store.Summaries { return w.sums }

func (w *Writer) meta(ctx context.Context, q querier, key string) (int64, error) {
	var v int64
	err := q.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

// querier is a pool, a connection or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// load reads the sequence counter and the device summaries, and folds in
// the messages above meta.summary_seq.
func (w *Writer) load(ctx context.Context) error {
	pool := w.DB.Pool
	var err error
	if w.seq, err = w.meta(ctx, pool, "last_seq"); err != nil {
		return err
	}
	rows, err := pool.Query(ctx, `SELECT id, name, first_seen, last_seen, message_count, last_seq, status, status_at, latest FROM devices`)
	if err != nil {
		return err
	}
	w.sums = store.NewSummaries()
	byID := make(map[int64]*store.Summary)
	for rows.Next() {
		d := &store.Summary{}
		var latest string
		dv := &d.Device
		if err := rows.Scan(&d.ID, &d.Name, &dv.FirstSeen, &dv.LastSeen, &dv.MessageCount, &dv.LastSeq, &dv.Status, &dv.StatusAt, &latest); err != nil {
			rows.Close()
			return err
		}
		if err := json.Unmarshal([]byte(latest), &dv.Latest); err != nil {
			dv.Latest = nil
		}
		w.sums.Add(d)
		byID[d.ID] = d
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	from, err := w.meta(ctx, pool, "summary_seq")
	if err != nil {
		return err
	}
	n := 0
	err = scanMessages(ctx, pool, `SELECT seq, device_id, ts, received, kind, flags, payload FROM messages WHERE seq > $1 AND seq <= $2 ORDER BY seq`, []any{from, w.seq},
		func(id int64, m *devices.Message) {
			if d := byID[id]; d != nil && d.Fold(m) {
				n++
			}
		})
	if n > 0 {
		w.Logger.Info("folded messages into device summaries", "messages", n, "after_seq", from)
	}
	return err
}

// scanMessages runs q (columns seq, device_id, ts, received, kind, flags,
// payload) and hands each message, its values decoded, to fn.
func scanMessages(ctx context.Context, q querier, sql string, args []any, fn func(deviceID int64, m *devices.Message)) error {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var m devices.Message
		var id int64
		var kind int16
		var flags int32
		if err := rows.Scan(&m.Seq, &id, &m.TS, &m.Received, &kind, &flags, &m.Payload); err != nil {
			return err
		}
		m.Kind, m.Flags = devices.Kind(kind), devices.Flags(flags)
		if m.Kind == devices.KindTelemetry && m.IsJSON() {
			_, m.Values, _ = devices.DecodePayload(m.Payload, m.Received)
		}
		fn(id, &m)
	}
	return rows.Err()
}

// Device returns the current summary of one device, or ErrNotFound.
func (w *Writer) Device(id string) (*devices.Device, error) { return w.sums.Device(id) }

// Activity lists every device's last-seen time and status.
func (w *Writer) Activity() []devices.Activity { return w.sums.Activity() }

// ActivityOf returns one device's Activity.
func (w *Writer) ActivityOf(id string) (devices.Activity, bool) { return w.sums.ActivityOf(id) }

// Close stops taking messages, commits and dispatches everything queued,
// saves the summaries, waits for the pipeline, then stops the follower once
// it has applied this hub's last commit. It does not close the DB.
func (w *Writer) Close(ctx context.Context) error {
	if !w.closing.CompareAndSwap(false, true) {
		return nil
	}
	err := w.Stop(ctx)
	deadline := time.Now().Add(2 * time.Second)
	for int64(w.sums.Seq()) < w.seq && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the live feed gets the last messages
	}
	w.stopFollow()
	<-w.followDone
	if w.leader != nil {
		w.leader.Release()
		w.leader = nil
	}
	return err
}

// AfterBatch implements store.Backend.
func (w *Writer) AfterBatch(context.Context) {}

// Drain implements store.Backend: the leader saves every changed summary.
func (w *Writer) Drain(ctx context.Context) {
	if !w.lead(ctx) {
		return
	}
	for attempt := 0; attempt < 3; attempt++ {
		err := w.saveSummaries(ctx)
		if err == nil {
			return
		}
		w.Logger.Error("saving device summaries at shutdown failed", "error", err, "attempt", attempt+1)
		time.Sleep(200 * time.Millisecond)
	}
}

// batch is one transaction of messages.
type batch struct {
	w       *Writer
	tx      pgx.Tx
	msgs    []*devices.Message
	ds      []*store.Summary
	created []string
	// done, when not 0, is the first seq of this very batch, which an
	// earlier attempt committed although its COMMIT reported an error.
	done int64
}

// Begin implements store.Backend. After a COMMIT whose outcome was lost
// (the connection broke while it ran), it first looks for that commit's
// token: found, the batch the pipeline tries again is already stored, and
// the new attempt only takes its seqs.
func (w *Writer) Begin(ctx context.Context) (store.Batch, error) {
	b := &batch{w: w}
	if w.unsure != 0 {
		err := w.DB.Pool.QueryRow(ctx, `SELECT lo FROM commit_tokens WHERE token = $1`, w.unsure).Scan(&b.done)
		switch {
		case errors.Is(err, pgx.ErrNoRows): // it did not commit: write it again
		case err != nil:
			return nil, fmt.Errorf("look up an unsure commit: %w", err)
		default:
			w.Logger.Warn("a commit whose answer was lost had committed; not storing it again", "first_seq", b.done)
		}
		w.unsure = 0
	}
	tx, err := w.DB.Pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	b.tx = tx
	return b, nil
}

// Append implements store.Batch: the device's row is found or inserted now,
// the message is written at Commit.
func (b *batch) Append(ctx context.Context, m *devices.Message) error {
	d, isNew, err := b.w.device(ctx, b.tx, m.Device, m.Received)
	if err != nil {
		return err
	}
	if isNew {
		b.created = append(b.created, m.Device)
	}
	b.msgs, b.ds = append(b.msgs, m), append(b.ds, d)
	return nil
}

// Commit implements store.Batch.
func (b *batch) Commit(ctx context.Context) error {
	w := b.w
	var hi int64
	if n := len(b.msgs); n > 0 && b.done != 0 {
		b.tx.Rollback(ctx) // stored already, by the attempt that seemed to fail
		for i, m := range b.msgs {
			m.Seq = devices.Seq(b.done + int64(i))
		}
		hi = b.done + int64(n) - 1
	} else if n > 0 {
		if err := b.tx.QueryRow(ctx, `UPDATE meta SET value = value + $1 WHERE key = 'last_seq' RETURNING value`, n).Scan(&hi); err != nil {
			return fmt.Errorf("take sequence numbers: %w", err)
		}
		lo := hi - int64(n) + 1
		rows := make([][]any, n)
		for i, m := range b.msgs {
			m.Seq = devices.Seq(lo + int64(i))
			payload := m.Payload
			if payload == nil {
				payload = []byte{}
			}
			rows[i] = []any{int64(m.Seq), b.ds[i].ID, m.TS, m.Received, m.Topic, int16(m.Kind), int16(m.QoS), int32(m.Flags), payload}
		}
		if _, err := b.tx.CopyFrom(ctx, pgx.Identifier{"messages"}, messageColumns, pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("copy messages: %w", err)
		}
		// Delivered to listening hubs at commit; the payload says whose.
		if _, err := b.tx.Exec(ctx, `SELECT pg_notify('`+notifyChannel+`', $1)`, w.hubID); err != nil {
			return fmt.Errorf("notify: %w", err)
		}
		token := int64(rand.Uint64() >> 1)
		if _, err := b.tx.Exec(ctx, `INSERT INTO commit_tokens (token, lo, at) VALUES ($1, $2, $3)`, token, lo, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("commit token: %w", err)
		}
		if err := b.tx.Commit(ctx); err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				w.unsure = token // the server may have committed: Begin looks
			}
			return err
		}
	} else if err := b.tx.Commit(ctx); err != nil {
		return err
	}
	if len(b.msgs) > 0 {
		c := committed{msgs: make([]devices.Message, len(b.msgs)), ids: make([]int64, len(b.msgs))}
		for i, m := range b.msgs {
			c.msgs[i], c.ids[i] = *m, b.ds[i].ID
		}
		w.followMu.Lock()
		w.takeLocal(ctx, c) // before the PUBACKs: a device reads its own write
		w.followMu.Unlock()
		w.seq = hi
	}
	return nil
}

var messageColumns = []string{"seq", "device_id", "ts", "received", "topic", "kind", "qos", "flags", "payload"}

// Rollback implements store.Batch; devices it created are forgotten.
func (b *batch) Rollback(ctx context.Context) error {
	for _, name := range b.created {
		b.w.sums.Remove(name)
	}
	err := b.tx.Rollback(ctx)
	if errors.Is(err, pgx.ErrTxClosed) {
		return nil
	}
	return err
}

// device returns the summary of name, inserting the device's row first
// when it is new. The upsert returns the row another hub may have made.
func (w *Writer) device(ctx context.Context, tx querier, name string, now int64) (*store.Summary, bool, error) {
	if d := w.sums.Get(name); d != nil {
		return d, false, nil
	}
	d := &store.Summary{Name: name, Device: devices.Device{FirstSeen: now, LastSeen: now}}
	if err := tx.QueryRow(ctx, `INSERT INTO devices (name, first_seen, last_seen) VALUES ($1, $2, $2)
		ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id`, name, now).Scan(&d.ID); err != nil {
		return nil, false, err
	}
	return w.sums.Add(d), true, nil
}

// saveSummaries saves every changed summary in one statement, and
// summary_seq with them. It runs on the write loop, of the leading hub
// (and of the hub that deleted a device's messages, for that device).
func (w *Writer) saveSummaries(ctx context.Context) error {
	// Every message up to the follower's position is in the summaries.
	w.sums.StartRound(int64(w.sums.Seq()))
	if !w.sums.InRound() {
		return nil
	}
	part, last := w.sums.RoundPart(1<<30, 1<<62)
	n := len(part)
	ids, first, seen, count, lastSeq, statusAt := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	status, lat := make([]string, n), make([]string, n)
	for i, r := range part {
		dv := &r.Device
		ids[i], first[i], seen[i], count[i], lastSeq[i], status[i], statusAt[i], lat[i] = r.ID, dv.FirstSeen, dv.LastSeen, dv.MessageCount, int64(dv.LastSeq), dv.Status, dv.StatusAt, string(r.Latest)
	}
	err := pgx.BeginFunc(ctx, w.DB.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE devices d SET first_seen = u.first_seen, last_seen = u.last_seen, message_count = u.message_count,
			last_seq = u.last_seq, status = u.status, status_at = u.status_at, latest = u.latest
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[], $8::text[])
				AS u (id, first_seen, last_seen, message_count, last_seq, status, status_at, latest)
			WHERE d.id = u.id`, ids, first, seen, count, lastSeq, status, statusAt, lat); err != nil {
			return err
		}
		if last {
			_, err := tx.Exec(ctx, `UPDATE meta SET value = $1 WHERE key = 'summary_seq'`, w.sums.RoundSeq())
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	w.sums.Saved(n)
	return nil
}
