package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/telehub/telehub/devices"
)

// MaxListLimit caps MessageFilter.Limit.
const MaxListLimit = 10000

// MessageService reads messages and devices through the DB's read-only pool,
// so queries never wait for the writer (WAL readers see the last commit).
type MessageService struct {
	db *DB
	// LastSeqFunc reports the highest committed sequence number; the Writer's
	// LastSeq when one runs in this process. Nil means read it from the file.
	LastSeqFunc func() devices.Seq
}

var _ devices.MessageService = (*MessageService)(nil)

// NewMessageService returns a MessageService on an opened db.
func NewMessageService(db *DB) *MessageService { return &MessageService{db: db} }

// LastSeq implements devices.MessageService.
func (s *MessageService) LastSeq() devices.Seq {
	if s.LastSeqFunc != nil {
		return s.LastSeqFunc()
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
	d, err := scanDevice(s.db.read.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE name = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("device %q: %w", id, devices.ErrNotFound)
	}
	return d, err
}

// ListDevices implements devices.MessageService.
func (s *MessageService) ListDevices(ctx context.Context) ([]*devices.Device, error) {
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
	from, to := f.From, f.To
	if from == 0 {
		from = math.MinInt64
	}
	if to == 0 {
		to = math.MaxInt64
	}
	if from > to {
		return nil, fmt.Errorf("%w: from is after to", devices.ErrInvalid)
	}
	q := `SELECT m.seq, d.name, m.topic, m.ts, m.received, m.qos, m.flags, m.payload FROM messages m JOIN devices d ON d.id = m.device_id WHERE `
	args := []any{}
	if f.Device != "" {
		var id int64
		err := s.db.read.QueryRowContext(ctx, `SELECT id FROM devices WHERE name = ?`, f.Device).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("device %q: %w", f.Device, devices.ErrNotFound)
		} else if err != nil {
			return nil, err
		}
		q += `m.device_id = ? AND `
		args = append(args, id)
	}
	q += `m.seq > ? AND m.ts BETWEEN ? AND ? ORDER BY `
	args = append(args, int64(f.AfterSeq), from, to)
	dir := ` ASC`
	if f.Desc {
		dir = ` DESC`
	}
	if f.BySeq {
		q += `m.seq` + dir
	} else {
		q += `m.ts` + dir + `, m.seq` + dir
	}
	q += ` LIMIT ?`
	args = append(args, f.Limit)

	rows, err := s.db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]devices.Message, 0, min(f.Limit, 256))
	for rows.Next() {
		var m devices.Message
		var qos, flags int64
		if err := rows.Scan(&m.Seq, &m.Device, &m.Topic, &m.TS, &m.Received, &qos, &flags, &m.Payload); err != nil {
			return nil, err
		}
		m.QoS, m.Flags = byte(qos), devices.Flags(flags)
		out = append(out, m)
	}
	return out, rows.Err()
}
