package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// MaxListLimit caps MessageFilter.Limit: a safety bound on one query's
// memory. The REST API enforces its own, lower, documented limits.
const MaxListLimit = 100000

// MessageService reads messages and devices through the DB's read-only pool,
// so queries never wait for the writer (WAL readers see the last commit).
type MessageService struct {
	db *DB
	// Summaries, when a Writer runs in this process (Writer.Summaries),
	// supply the current device summaries and sequence number from memory;
	// the saved rows trail them by up to the writer's FlushInterval. Nil
	// means read everything from the file.
	Summaries *store.Summaries

	far chan struct{} // replays from far back under way (replayFar)
}

var _ devices.MessageService = (*MessageService)(nil)

// farReplays is how many replays from far back may run at once: each holds
// up to ReplayFarLimit seqs in memory (16 MB) while it runs.
const farReplays = 2

// NewMessageService returns a MessageService on an opened db.
func NewMessageService(db *DB) *MessageService {
	return &MessageService{db: db, far: make(chan struct{}, farReplays)}
}

// LastSeq implements devices.MessageService.
func (s *MessageService) LastSeq() devices.Seq {
	if s.Summaries != nil {
		return s.Summaries.Seq()
	}
	var seq sql.NullInt64
	s.db.read.QueryRow(`SELECT max(seq) FROM messages`).Scan(&seq)
	return devices.Seq(seq.Int64)
}

const deviceCols = `name, first_seen, last_seen, message_count, last_seq, status, status_at, latest`

func scanDevice(sc interface{ Scan(...any) error }) (*devices.Device, error) {
	d := &devices.Device{}
	var latest string
	if err := sc.Scan(&d.ID, &d.FirstSeen, &d.LastSeen, &d.MessageCount, &d.LastSeq, &d.Status, &d.StatusAt, &latest); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(latest), &d.Latest); err != nil {
		return nil, fmt.Errorf("device %s: latest values: %w", d.ID, err)
	}
	if d.Latest == nil {
		d.Latest = map[string]devices.Latest{}
	}
	return d, nil
}

// FindDevice implements devices.MessageService.
func (s *MessageService) FindDevice(ctx context.Context, id string) (*devices.Device, error) {
	if s.Summaries != nil {
		return s.Summaries.Device(id)
	}
	d, err := scanDevice(s.db.read.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE name = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("device %q: %w", id, devices.ErrNotFound)
	}
	return d, err
}

// ListDevices implements devices.MessageService.
func (s *MessageService) ListDevices(ctx context.Context) ([]*devices.Device, error) {
	if s.Summaries != nil {
		return s.Summaries.Devices(), nil
	}
	rows, err := s.db.read.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*devices.Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ListMessages implements devices.MessageService. Every value reaches SQLite
// as a bound parameter; only fixed fragments are concatenated.
func (s *MessageService) ListMessages(ctx context.Context, f devices.MessageFilter) ([]devices.Message, error) {
	if f.Limit <= 0 || f.Limit > MaxListLimit {
		return nil, fmt.Errorf("%w: limit must be 1..%d", devices.ErrInvalid, MaxListLimit)
	}
	if f.From > f.To {
		return nil, fmt.Errorf("%w: from is after to", devices.ErrInvalid)
	}
	var deviceID int64
	if f.Device != "" {
		err := s.db.read.QueryRowContext(ctx, `SELECT id FROM devices WHERE name = ?`, f.Device).Scan(&deviceID)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("device %q: %w", f.Device, devices.ErrNotFound)
		} else if err != nil {
			return nil, err
		}
	}
	if f.ByReceived {
		return s.listByReceived(ctx, f, deviceID)
	}
	q, args := messagesQuery(f, deviceID)
	return s.query(ctx, q, args, f.Limit)
}

// receivedSlack widens the sequence range found for a receive-time window:
// seq follows received only to within the time a message waits between the
// broker and the writer's queue.
const receivedSlack = 5000 // ms

// listByReceived lists a device's messages by arrival. Receive times grow
// with seq, so the window becomes a seq range found by binary search on the
// primary key (a few dozen point reads), and the range is read in seq order
// through the primary key, filtered to the device and the exact window. The
// cost grows with all the messages received in the window, not only the
// device's: it suits "what arrived lately", not years at a time.
func (s *MessageService) listByReceived(ctx context.Context, f devices.MessageFilter, deviceID int64) ([]devices.Message, error) {
	where := []string{`+m.device_id = ?`}
	args := []any{deviceID}
	if f.From > devices.MinTime {
		lo, err := s.firstSeqReceived(ctx, f.From-receivedSlack)
		if err != nil {
			return nil, err
		}
		where = append(where, `m.seq >= ?`, `m.received >= ?`)
		args = append(args, lo, f.From)
	}
	if f.To < devices.MaxTime {
		hi, err := s.firstSeqReceived(ctx, f.To+receivedSlack+1)
		if err != nil {
			return nil, err
		}
		where = append(where, `m.seq < ?`, `m.received <= ?`)
		args = append(args, hi, f.To)
	}
	dir := ` ASC`
	if f.Desc {
		dir = ` DESC`
	}
	if f.After != nil {
		if f.Desc {
			where = append(where, `m.seq < ?`)
		} else {
			where = append(where, `m.seq > ?`)
		}
		args = append(args, int64(f.After.Seq))
	}
	q := `SELECT ` + messageCols + ` FROM messages m JOIN devices d ON d.id = m.device_id WHERE ` +
		strings.Join(where, ` AND `) + ` ORDER BY m.seq` + dir + ` LIMIT ?`
	return s.query(ctx, q, append(args, f.Limit), f.Limit)
}

// firstSeqReceived returns the lowest seq whose message was received at or
// after ms (one past the highest seq when there is none).
func (s *MessageService) firstSeqReceived(ctx context.Context, ms int64) (int64, error) {
	var lo, hi sql.NullInt64
	if err := s.db.read.QueryRowContext(ctx, `SELECT min(seq), max(seq) FROM messages`).Scan(&lo, &hi); err != nil {
		return 0, err
	}
	a, b := lo.Int64, hi.Int64+1 // the answer is in [a, b]
	for a < b {
		mid := a + (b-a)/2
		var seq, received int64
		err := s.db.read.QueryRowContext(ctx, `SELECT seq, received FROM messages WHERE seq >= ? ORDER BY seq LIMIT 1`, mid).Scan(&seq, &received)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			b = mid
		case err != nil:
			return 0, err
		case received >= ms:
			b = mid
		default:
			a = seq + 1
		}
	}
	return a, nil
}

func (s *MessageService) query(ctx context.Context, q string, args []any, limit int) ([]devices.Message, error) {
	rows, err := s.db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]devices.Message, 0, min(limit, 256))
	for rows.Next() {
		var m devices.Message
		var kind, qos, flags int64
		if err := rows.Scan(&m.Seq, &m.Device, &m.Topic, &kind, &m.TS, &m.Received, &qos, &flags, &m.Payload); err != nil {
			return nil, err
		}
		m.Kind, m.QoS, m.Flags = devices.Kind(kind), byte(qos), devices.Flags(flags)
		out = append(out, m)
	}
	return out, rows.Err()
}

// messagesQuery builds the SELECT for f (deviceID is 0 for all devices).
// Every value is a bound parameter; only fixed fragments are concatenated,
// and clauses that do not restrict are left out so that SQLite picks the
// index that matches the order.
func messagesQuery(f devices.MessageFilter, deviceID int64) (string, []any) {
	var where []string
	var args []any
	if deviceID != 0 {
		where = append(where, `m.device_id = ?`)
		args = append(args, deviceID)
	}
	from, to := f.From, f.To
	if f.After != nil {
		// The cursor's ts is the tighter bound on the side the page starts
		// from: folding it in makes SQLite seek to the cursor instead of
		// reading from "from" again on every page (quadratic over a scan).
		if f.Desc && f.After.TS < to {
			to = f.After.TS
		} else if !f.Desc && f.After.TS > from {
			from = f.After.TS
		}
	}
	if from > devices.MinTime {
		where = append(where, `m.ts >= ?`)
		args = append(args, from)
	}
	if to < devices.MaxTime {
		where = append(where, `m.ts <= ?`)
		args = append(args, to)
	}
	if f.After != nil {
		// Ties on ts are broken by seq, the rowid that ends each entry of
		// the (device_id, ts) index.
		if f.Desc {
			where = append(where, `(m.ts, m.seq) < (?, ?)`)
		} else {
			where = append(where, `(m.ts, m.seq) > (?, ?)`)
		}
		args = append(args, f.After.TS, int64(f.After.Seq))
	}
	q := `SELECT ` + messageCols + ` FROM messages m JOIN devices d ON d.id = m.device_id`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	dir := ` ASC`
	if f.Desc {
		dir = ` DESC`
	}
	q += ` ORDER BY m.ts` + dir + `, m.seq` + dir
	return q + ` LIMIT ?`, append(args, f.Limit)
}

// replayPage is how many messages one replay query reads.
const replayPage = 1000

// ReplayScanLimit is the widest sequence range that the replay of one device
// reads through the primary key (every device's messages in the range, the
// others skipped); wider ranges read the device's history index instead.
const ReplayScanLimit = 200000

const messageCols = `m.seq, d.name, m.topic, m.kind, m.ts, m.received, m.qos, m.flags, m.payload`

// Replay implements devices.MessageService. It pages through the range with
// keyset queries on short read transactions, so a long replay never holds a
// snapshot that stops WAL checkpoints.
func (s *MessageService) Replay(ctx context.Context, device string, after, upTo devices.Seq, fn func(*devices.Message) error) error {
	if upTo <= after {
		return nil
	}
	var deviceID int64
	if device != "" {
		err := s.db.read.QueryRowContext(ctx, `SELECT id FROM devices WHERE name = ?`, device).Scan(&deviceID)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		} else if err != nil {
			return err
		}
	}
	if deviceID != 0 && upTo-after > ReplayScanLimit {
		return s.replayFar(ctx, deviceID, after, upTo, fn)
	}
	cursorSeq := int64(after)
	for {
		q, args := replayQuery(deviceID, cursorSeq, int64(upTo))
		msgs, err := s.query(ctx, q, args, replayPage)
		if err != nil {
			return err
		}
		for i := range msgs {
			if err := fn(&msgs[i]); err != nil {
				return err
			}
		}
		if len(msgs) < replayPage {
			return nil
		}
		cursorSeq = int64(msgs[len(msgs)-1].Seq)
	}
}

// ReplayFarLimit caps the messages of one device a replay from far back
// returns; past it Replay fails with ErrInvalid, and the WebSocket tells the
// client to reload (a "reset" frame).
const ReplayFarLimit = 2_000_000

// replayFar replays one device from far back, still in seq order: it reads
// the device's seqs in the range from messages_device_ts, which holds seq
// (the rowid) in every entry, so the scan never leaves the device's part of
// the index; then fetches the rows by primary key, a page of seqs at a time.
func (s *MessageService) replayFar(ctx context.Context, deviceID int64, after, upTo devices.Seq, fn func(*devices.Message) error) error {
	select { // bounded: many clients far behind at once wait their turn
	case s.far <- struct{}{}:
		defer func() { <-s.far }()
	case <-ctx.Done():
		return ctx.Err()
	}
	rows, err := s.db.read.QueryContext(ctx, replayFarSeqs, deviceID, int64(after), int64(upTo))
	if err != nil {
		return err
	}
	var seqs []int64
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return err
		}
		if seqs = append(seqs, seq); len(seqs) > ReplayFarLimit {
			rows.Close()
			return fmt.Errorf("%w: more than %d messages of the device to replay", devices.ErrInvalid, ReplayFarLimit)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	slices.Sort(seqs)
	for len(seqs) > 0 {
		page := seqs[:min(len(seqs), replayPage)]
		seqs = seqs[len(page):]
		args := make([]any, len(page))
		for i, seq := range page {
			args[i] = seq
		}
		q := `SELECT ` + messageCols + ` FROM messages m JOIN devices d ON d.id = m.device_id WHERE m.seq IN (?` +
			strings.Repeat(",?", len(page)-1) + `) ORDER BY m.seq`
		msgs, err := s.query(ctx, q, args, len(page))
		if err != nil {
			return err
		}
		for i := range msgs { // a message deleted meanwhile is simply absent
			if err := fn(&msgs[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

const replayFarSeqs = `SELECT seq FROM messages INDEXED BY messages_device_ts WHERE device_id = ? AND seq > ? AND seq <= ?`

// replayQuery builds one page of a replay by primary key, in seq order.
func replayQuery(deviceID int64, cursorSeq, upTo int64) (string, []any) {
	q := `SELECT ` + messageCols + ` FROM messages m JOIN devices d ON d.id = m.device_id WHERE m.seq > ? AND m.seq <= ?`
	args := []any{cursorSeq, upTo}
	if deviceID != 0 {
		// The unary + keeps SQLite from using messages_device_ts here: the
		// range is narrow in seq, and the primary key gives seq order.
		q += ` AND +m.device_id = ?`
		args = append(args, deviceID)
	}
	return q + ` ORDER BY m.seq LIMIT ?`, append(args, replayPage)
}
