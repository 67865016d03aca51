package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/telehub/telehub/devices"
)

// Commands implements devices.CommandStore in SQL that both backends run as
// it is (through database/sql, parameters as $1, $2), like Credentials.
// Commands are rare next to telemetry: they take the credential store's
// connections, never the message writer's.
type Commands struct {
	// ReadDB serves the reads (statements prepared once); Writes commits
	// the writes, in groups.
	ReadDB *Stmts
	Writes *GroupTx
}

func (s *Commands) write(ctx context.Context, fn func(tx Execer) error) error {
	return s.Writes.Do(ctx, fn)
}

var _ devices.CommandStore = (*Commands)(nil)

// MaxCommandList caps CommandFilter.Limit.
const MaxCommandList = 1000

// openCommand selects the commands that are not finished (a one-way
// command is finished once delivered): is_open is 1 from creation until
// the change that finishes the command sets it to 0 (updateOp). It is, word
// for word, the predicate of the partial indexes of open commands
// (commands_open, commands_device_open): only then do SQLite and
// PostgreSQL use them, and the queries read the few open commands instead
// of every command ever sent. Queries that want fewer statuses add a term
// to it. The indexes follow is_open rather than status so that a change
// from queued to sent to delivered rewrites no index entry.
const openCommand = `is_open = 1`

// The queries of open commands, run at every new command (the per-device
// limit), when a device connects, and every second or so (expiry, the
// sweep for devices that listen). store's tests check their plans.
const (
	queryCountPending  = `SELECT count(*) FROM commands WHERE device = $1 AND ` + openCommand
	queryPending       = `SELECT ` + commandCols + ` FROM commands WHERE device = $1 AND ` + openCommand + ` AND status IN ('queued', 'sent') AND expires > $2 ORDER BY id LIMIT 1000`
	queryDue           = `SELECT ` + commandCols + ` FROM commands WHERE ` + openCommand + ` AND expires <= $1 ORDER BY expires LIMIT $2`
	queryQueuedDevices = `SELECT DISTINCT device FROM commands WHERE ` + openCommand + ` AND status = 'queued' AND expires > $1 LIMIT $2`
)

const commandCols = `id, device, method, params, oneway, status, created, expires, updated, response, error`

// CreateCommand implements devices.CommandStore.
func (s *Commands) CreateCommand(ctx context.Context, c devices.Command) (*devices.Command, error) {
	if err := devices.ValidateDeviceID(c.Device); err != nil {
		return nil, err
	}
	c.Status, c.Updated = devices.CommandQueued, c.Created
	err := s.write(ctx, func(tx Execer) error {
		if err := tx.QueryRowContext(ctx, `INSERT INTO commands (device, method, params, oneway, status, created, expires, updated, is_open)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) RETURNING id`,
			c.Device, c.Method, string(c.Params), btoi(c.Oneway), string(c.Status), c.Created, c.Expires, c.Updated).Scan(&c.ID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO command_events (command_id, at, status, note) VALUES ($1, $2, $3, $4)`,
			c.ID, c.Created, string(c.Status), "")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create command: %w", err)
	}
	c.History = []devices.CommandEvent{{Status: c.Status, At: c.Created}}
	return &c, nil
}

// Command implements devices.CommandStore.
func (s *Commands) Command(ctx context.Context, device string, id int64) (*devices.Command, error) {
	list, err := s.query(ctx, s.ReadDB, `SELECT `+commandCols+` FROM commands WHERE id = $1 AND device = $2`, id, device)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("command %d of device %q: %w", id, device, devices.ErrNotFound)
	}
	return &list[0], nil
}

// ListCommands implements devices.CommandStore.
func (s *Commands) ListCommands(ctx context.Context, f devices.CommandFilter) ([]devices.Command, error) {
	if f.Limit <= 0 || f.Limit > MaxCommandList {
		return nil, fmt.Errorf("%w: limit must be 1..%d", devices.ErrInvalid, MaxCommandList)
	}
	q := `SELECT ` + commandCols + ` FROM commands WHERE device = $1`
	args := []any{f.Device}
	if f.Status != "" {
		args = append(args, string(f.Status))
		q += ` AND status = $` + strconv.Itoa(len(args))
	}
	if f.Before > 0 {
		args = append(args, f.Before)
		q += ` AND id < $` + strconv.Itoa(len(args))
	}
	args = append(args, f.Limit)
	q += ` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args))
	return s.query(ctx, s.ReadDB, q, args...)
}

// PendingCommands implements devices.CommandStore.
func (s *Commands) PendingCommands(ctx context.Context, device string, now int64) ([]devices.Command, error) {
	return s.queryNoHistory(ctx, s.ReadDB, queryPending, device, now)
}

// CountPending implements devices.CommandStore.
func (s *Commands) CountPending(ctx context.Context, device string) (int, error) {
	var n int
	err := s.ReadDB.QueryRowContext(ctx, queryCountPending, device).Scan(&n)
	return n, err
}

// OpenCommands implements devices.CommandStore, through the partial index
// of open commands.
func (s *Commands) OpenCommands(ctx context.Context) (map[devices.CommandStatus]int, error) {
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT status, count(*) FROM commands WHERE `+openCommand+` GROUP BY status`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[devices.CommandStatus]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[devices.CommandStatus(st)] = n
	}
	return out, rows.Err()
}

// QueuedDevices implements devices.CommandStore.
func (s *Commands) QueuedDevices(ctx context.Context, now int64, limit int) ([]string, error) {
	return queryStrings(ctx, s.ReadDB, queryQueuedDevices, now, limit)
}

// queryStrings runs a query of one text column and returns its values.
func queryStrings(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// DueCommands implements devices.CommandStore.
func (s *Commands) DueCommands(ctx context.Context, now int64, limit int) ([]devices.Command, error) {
	return s.queryNoHistory(ctx, s.ReadDB, queryDue, now, limit)
}

// UpdateCommand implements devices.CommandStore.
func (s *Commands) UpdateCommand(ctx context.Context, device string, id int64, from []devices.CommandStatus, to devices.CommandStatus, at int64, note string, response json.RawMessage, errText string) (*devices.Command, bool, error) {
	fn, c, err := s.updateOp(device, id, from, to, at, note, response, errText)
	if err == nil {
		err = s.write(ctx, fn)
	}
	return updated(id, *c, err)
}

// UpdateCommandLater implements devices.CommandStore.
func (s *Commands) UpdateCommandLater(device string, id int64, from []devices.CommandStatus, to devices.CommandStatus, at int64, note string, response json.RawMessage, errText string) func(ctx context.Context) (*devices.Command, bool, error) {
	fn, c, err := s.updateOp(device, id, from, to, at, note, response, errText)
	if err != nil {
		return func(context.Context) (*devices.Command, bool, error) { return updated(id, nil, err) }
	}
	wait := s.Writes.Submit(fn)
	return func(ctx context.Context) (*devices.Command, bool, error) { return updated(id, *c, wait(ctx)) }
}

func updated(id int64, c *devices.Command, err error) (*devices.Command, bool, error) {
	if err != nil {
		return nil, false, fmt.Errorf("update command %d: %w", id, err)
	}
	return c, c != nil, nil
}

// updateOp is the write of a status change: one statement changes and
// returns the row (RETURNING, on both backends), one records the event;
// the history is left out (Command reads it). *c is the command after it,
// nil when it was in none of from or another device's. A change that
// finishes the command clears is_open; only such a change touches the
// indexes of open commands.
func (s *Commands) updateOp(device string, id int64, from []devices.CommandStatus, to devices.CommandStatus, at int64, note string, response json.RawMessage, errText string) (func(tx Execer) error, **devices.Command, error) {
	c := new(*devices.Command)
	if len(from) == 0 {
		return nil, c, errors.New("no status to move from")
	}
	args := []any{string(to), at, nullJSON(response), errText, id, device}
	in := make([]string, len(from))
	for i, st := range from {
		args = append(args, string(st))
		in[i] = "$" + strconv.Itoa(len(args))
	}
	closing := ""
	if to.Final() {
		closing = ", is_open = 0"
	}
	q := `UPDATE commands SET status = $1, updated = $2, response = coalesce($3, response),
		error = CASE WHEN $4 = '' THEN error ELSE $4 END` + closing + `
		WHERE id = $5 AND ($6 = '' OR device = $6) AND status IN (` + strings.Join(in, ", ") + `) RETURNING ` + commandCols
	ctx := context.Background()
	return func(tx Execer) error {
		*c = nil
		list, err := s.queryNoHistory(ctx, tx, q, args...)
		if err != nil || len(list) == 0 {
			return err // in none of from, or another device's
		}
		if to == devices.CommandDelivered && list[0].Oneway { // done at delivery
			if _, err := tx.ExecContext(ctx, `UPDATE commands SET is_open = 0 WHERE id = $1`, id); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO command_events (command_id, at, status, note) VALUES ($1, $2, $3, $4)`, id, at, string(to), note); err != nil {
			return err
		}
		list[0].History = nil
		*c = &list[0]
		return nil
	}, c, nil
}

func nullJSON(b json.RawMessage) any {
	if b == nil {
		return nil
	}
	return string(b)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

type queryer interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// query reads commands with their histories.
func (s *Commands) query(ctx context.Context, db queryer, q string, args ...any) ([]devices.Command, error) {
	out, err := s.queryNoHistory(ctx, db, q, args...)
	if err != nil || len(out) == 0 {
		return out, err
	}
	return out, s.histories(ctx, db, out)
}

// queryNoHistory reads commands without their histories (for the hub's
// own use: sending, expiring).
func (s *Commands) queryNoHistory(ctx context.Context, db queryer, q string, args ...any) ([]devices.Command, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	out := []devices.Command{}
	for rows.Next() {
		var c devices.Command
		var params, status string
		var oneway int
		var response sql.NullString
		if err := rows.Scan(&c.ID, &c.Device, &c.Method, &params, &oneway, &status, &c.Created, &c.Expires, &c.Updated, &response, &c.Error); err != nil {
			rows.Close()
			return nil, err
		}
		c.Params, c.Oneway, c.Status = json.RawMessage(params), oneway != 0, devices.CommandStatus(status)
		if response.Valid {
			c.Response = json.RawMessage(response.String)
		}
		c.History = []devices.CommandEvent{}
		out = append(out, c)
	}
	rows.Close()
	return out, rows.Err()
}

// histories fills in the histories of cmds.
func (s *Commands) histories(ctx context.Context, db queryer, out []devices.Command) error {
	byID := make(map[int64]int, len(out))
	for i, c := range out {
		byID[c.ID] = i
	}
	ids := make([]any, 0, len(out))
	in := make([]string, 0, len(out))
	for _, c := range out {
		ids = append(ids, c.ID)
		in = append(in, "$"+strconv.Itoa(len(ids)))
	}
	ev, err := db.QueryContext(ctx, `SELECT command_id, at, status, note FROM command_events WHERE command_id IN (`+strings.Join(in, ", ")+`) ORDER BY id`, ids...)
	if err != nil {
		return err
	}
	defer ev.Close()
	for ev.Next() {
		var id int64
		var e devices.CommandEvent
		var status string
		if err := ev.Scan(&id, &e.At, &status, &e.Note); err != nil {
			return err
		}
		e.Status = devices.CommandStatus(status)
		c := &out[byID[id]]
		c.History = append(c.History, e)
	}
	return ev.Err()
}
