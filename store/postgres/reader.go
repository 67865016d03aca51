package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// MaxListLimit caps MessageFilter.Limit, as on SQLite.
const MaxListLimit = 100000

// replayPage is how many messages one replay query reads.
const replayPage = 1000

// MessageService reads messages and devices. Summaries and the sequence
// number come from the writer's memory.
type MessageService struct {
	db   *DB
	sums *store.Summaries
}

var _ devices.MessageService = (*MessageService)(nil)

// NewMessageService returns a MessageService on db, with the summaries of
// the writer that runs in this process.
func NewMessageService(db *DB, sums *store.Summaries) *MessageService {
	return &MessageService{db: db, sums: sums}
}

// LastSeq implements devices.MessageService.
func (s *MessageService) LastSeq() devices.Seq { return s.sums.Seq() }

// FindDevice implements devices.MessageService.
func (s *MessageService) FindDevice(_ context.Context, id string) (*devices.Device, error) {
	return s.sums.Device(id)
}

// ListDevices implements devices.MessageService.
func (s *MessageService) ListDevices(context.Context) ([]*devices.Device, error) {
	return s.sums.Devices(), nil
}

func (s *MessageService) deviceID(ctx context.Context, name string) (int64, bool, error) {
	var id int64
	err := s.db.Pool.QueryRow(ctx, `SELECT id FROM devices WHERE name = $1`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return id, err == nil, err
}

// args numbers query parameters as they are added.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

const messageCols = `m.seq, d.name, m.topic, m.kind, m.ts, m.received, m.qos, m.flags, m.payload`

// ListMessages implements devices.MessageService. Every value is a bound
// parameter; only fixed fragments are concatenated.
func (s *MessageService) ListMessages(ctx context.Context, f devices.MessageFilter) ([]devices.Message, error) {
	if f.Limit <= 0 || f.Limit > MaxListLimit {
		return nil, fmt.Errorf("%w: limit must be 1..%d", devices.ErrInvalid, MaxListLimit)
	}
	if f.From > f.To {
		return nil, fmt.Errorf("%w: from is after to", devices.ErrInvalid)
	}
	var a args
	var where []string
	if f.Device != "" {
		id, ok, err := s.deviceID(ctx, f.Device)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("device %q: %w", f.Device, devices.ErrNotFound)
		}
		where = append(where, `m.device_id = `+a.add(id))
	}
	dir := ` ASC`
	if f.Desc {
		dir = ` DESC`
	}
	var order string
	if f.ByReceived {
		if f.From > devices.MinTime {
			where = append(where, `m.received >= `+a.add(f.From))
		}
		if f.To < devices.MaxTime {
			where = append(where, `m.received <= `+a.add(f.To))
		}
		if f.After != nil {
			op := ` > `
			if f.Desc {
				op = ` < `
			}
			where = append(where, `m.seq`+op+a.add(int64(f.After.Seq)))
		}
		order = ` ORDER BY m.seq` + dir
	} else {
		from, to := f.From, f.To
		if f.After != nil {
			// The cursor is the tighter bound on the side the page starts from.
			if f.Desc && f.After.TS < to {
				to = f.After.TS
			} else if !f.Desc && f.After.TS > from {
				from = f.After.TS
			}
		}
		if from > devices.MinTime {
			where = append(where, `m.ts >= `+a.add(from))
		}
		if to < devices.MaxTime {
			where = append(where, `m.ts <= `+a.add(to))
		}
		if f.After != nil {
			op := ` > `
			if f.Desc {
				op = ` < `
			}
			where = append(where, `(m.ts, m.seq)`+op+`(`+a.add(f.After.TS)+`, `+a.add(int64(f.After.Seq))+`)`)
		}
		order = ` ORDER BY m.ts` + dir + `, m.seq` + dir
	}
	q := `SELECT ` + messageCols + ` FROM messages m JOIN devices d ON d.id = m.device_id`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += order + ` LIMIT ` + a.add(f.Limit)
	return s.query(ctx, q, a, f.Limit)
}

func (s *MessageService) query(ctx context.Context, q string, a []any, limit int) ([]devices.Message, error) {
	rows, err := s.db.Pool.Query(ctx, q, a...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]devices.Message, 0, min(limit, 256))
	for rows.Next() {
		var m devices.Message
		var kind, qos int16
		var flags int32
		if err := rows.Scan(&m.Seq, &m.Device, &m.Topic, &kind, &m.TS, &m.Received, &qos, &flags, &m.Payload); err != nil {
			return nil, err
		}
		m.Kind, m.QoS, m.Flags = devices.Kind(kind), byte(qos), devices.Flags(flags)
		out = append(out, m)
	}
	return out, rows.Err()
}

// Replay implements devices.MessageService: keyset pages in seq order,
// through the primary key or, for one device, its (device_id, seq) index.
func (s *MessageService) Replay(ctx context.Context, device string, after, upTo devices.Seq, fn func(*devices.Message) error) error {
	if upTo <= after {
		return nil
	}
	var id int64
	if device != "" {
		var ok bool
		var err error
		if id, ok, err = s.deviceID(ctx, device); err != nil || !ok {
			return err
		}
	}
	cursor := int64(after)
	for {
		var a args
		q := `SELECT ` + messageCols + ` FROM messages m JOIN devices d ON d.id = m.device_id WHERE m.seq > ` + a.add(cursor) + ` AND m.seq <= ` + a.add(int64(upTo))
		if id != 0 {
			q += ` AND m.device_id = ` + a.add(id)
		}
		q += ` ORDER BY m.seq LIMIT ` + a.add(replayPage)
		msgs, err := s.query(ctx, q, a, replayPage)
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
		cursor = int64(msgs[len(msgs)-1].Seq)
	}
}

// Series implements devices.MessageService from the messages themselves
// (store.SeriesFromMessages); PostgreSQL keeps no rollups yet.
func (s *MessageService) Series(ctx context.Context, q devices.SeriesQuery) (*devices.Series, error) {
	return store.SeriesFromMessages(ctx, s, q, s.LastSeq())
}
