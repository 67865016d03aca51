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

// Alerts implements devices.AlertStore in SQL that both backends run as it
// is, like Commands: rules, alerts with their history, the evaluator's
// states and position, and the webhook outbox.
type Alerts struct {
	ReadDB *Stmts
	Writes *GroupTx
}

var _ devices.AlertStore = (*Alerts)(nil)

func (s *Alerts) write(ctx context.Context, fn func(tx Execer) error) error {
	return s.Writes.Do(ctx, fn)
}

// alertCursor is the hub_settings row of the evaluator's position.
const alertCursor = "alerts.seq"

// CreateRule implements devices.AlertStore.
func (s *Alerts) CreateRule(ctx context.Context, r devices.Rule) (*devices.Rule, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if r.Source == "" {
		r.Source = devices.RuleFromAPI
	}
	err := s.write(ctx, func(tx Execer) error { return insertRule(ctx, tx, &r) })
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func insertRule(ctx context.Context, tx Execer, r *devices.Rule) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM alert_rules WHERE name = $1`, r.Name).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: a rule named %q exists", devices.ErrConflict, r.Name)
	}
	spec, _ := json.Marshal(r)
	if err := tx.QueryRowContext(ctx, `INSERT INTO alert_rules (name, source, spec, created, updated) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
		r.Name, r.Source, string(spec), r.Created, r.Updated).Scan(&r.ID); err != nil {
		return fmt.Errorf("create rule: %w", err)
	}
	return nil
}

// UpdateRule implements devices.AlertStore.
func (s *Alerts) UpdateRule(ctx context.Context, r devices.Rule) (*devices.Rule, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	err := s.write(ctx, func(tx Execer) error { return updateRule(ctx, tx, &r) })
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func updateRule(ctx context.Context, tx Execer, r *devices.Rule) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM alert_rules WHERE name = $1 AND id <> $2`, r.Name, r.ID).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: a rule named %q exists", devices.ErrConflict, r.Name)
	}
	var created int64
	if err := tx.QueryRowContext(ctx, `SELECT created FROM alert_rules WHERE id = $1`, r.ID).Scan(&created); errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("rule %d: %w", r.ID, devices.ErrNotFound)
	} else if err != nil {
		return err
	}
	r.Created = created
	spec, _ := json.Marshal(r)
	if _, err := tx.ExecContext(ctx, `UPDATE alert_rules SET name = $1, source = $2, spec = $3, updated = $4 WHERE id = $5`,
		r.Name, r.Source, string(spec), r.Updated, r.ID); err != nil {
		return err
	}
	// A changed rule starts afresh: its pending conditions and windows were
	// those of the old rule. Its open alerts stay until the new rule clears
	// them.
	_, err := tx.ExecContext(ctx, `DELETE FROM alert_states WHERE rule_id = $1`, r.ID)
	return err
}

// DeleteRule implements devices.AlertStore.
func (s *Alerts) DeleteRule(ctx context.Context, id int64, at int64) error {
	return s.write(ctx, func(tx Execer) error { return deleteRule(ctx, tx, id, at) })
}

func deleteRule(ctx context.Context, tx Execer, id int64, at int64) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM alert_rules WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("rule %d: %w", id, devices.ErrNotFound)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM alert_states WHERE rule_id = $1`, id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO alert_events (alert_id, at, status, actor, note)
		SELECT id, $1, 'cleared', 'hub', 'rule deleted' FROM alerts WHERE rule_id = $2 AND status <> 'cleared'`, at, id); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE alerts SET status = 'cleared', cleared_by = 'hub', cleared_at = $1, updated = $1
		WHERE rule_id = $2 AND status <> 'cleared'`, at, id)
	return err
}

// Rule implements devices.AlertStore.
func (s *Alerts) Rule(ctx context.Context, id int64) (*devices.Rule, error) {
	list, err := s.rules(ctx, s.ReadDB, `WHERE id = $1`, id)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("rule %d: %w", id, devices.ErrNotFound)
	}
	return &list[0], nil
}

// Rules implements devices.AlertStore.
func (s *Alerts) Rules(ctx context.Context) ([]devices.Rule, error) {
	return s.rules(ctx, s.ReadDB, ``)
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (s *Alerts) rules(ctx context.Context, q querier, where string, args ...any) ([]devices.Rule, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, source, spec, created, updated FROM alert_rules `+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []devices.Rule{}
	for rows.Next() {
		var r devices.Rule
		var id, created, updated int64
		var source, spec string
		if err := rows.Scan(&id, &source, &spec, &created, &updated); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(spec), &r); err != nil {
			return nil, fmt.Errorf("rule %d: stored spec: %w", id, err)
		}
		r.ID, r.Source, r.Created, r.Updated = id, source, created, updated
		out = append(out, r)
	}
	return out, rows.Err()
}

// SyncFileRules implements devices.AlertStore.
func (s *Alerts) SyncFileRules(ctx context.Context, rules []devices.Rule, at int64) (added, changed, removed int, err error) {
	err = s.write(ctx, func(tx Execer) error {
		added, changed, removed = 0, 0, 0
		old, err := s.rules(ctx, tx, ``)
		if err != nil {
			return err
		}
		byName := map[string]devices.Rule{}
		for _, r := range old {
			byName[r.Name] = r
		}
		keep := map[string]bool{}
		for _, r := range rules {
			r.Source, r.Updated = devices.RuleFromFile, at
			keep[r.Name] = true
			prev, ok := byName[r.Name]
			switch {
			case !ok:
				r.Created = at
				if err := insertRule(ctx, tx, &r); err != nil {
					return err
				}
				added++
			case prev.Source != devices.RuleFromFile:
				return fmt.Errorf("%w: rule %q of the rules file: a rule of that name was made through the API", devices.ErrConflict, r.Name)
			case !sameRule(prev, r):
				r.ID = prev.ID
				if err := updateRule(ctx, tx, &r); err != nil {
					return err
				}
				changed++
			}
		}
		for _, r := range old {
			if r.Source == devices.RuleFromFile && !keep[r.Name] {
				if err := deleteRule(ctx, tx, r.ID, at); err != nil {
					return err
				}
				removed++
			}
		}
		return nil
	})
	return added, changed, removed, err
}

// sameRule compares what a rule says, not its id or times.
func sameRule(a, b devices.Rule) bool {
	a.ID, a.Created, a.Updated, b.ID, b.Created, b.Updated = 0, 0, 0, 0, 0, 0
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

const alertCols = `id, rule_id, rule, kind, device, severity, status, message, metric, first_value, first_at, last_value, last_at, count,
	created, updated, acked_by, acked_at, ack_note, cleared_by, cleared_at`

func scanAlerts(rows *sql.Rows) ([]devices.Alert, error) {
	defer rows.Close()
	out := []devices.Alert{}
	for rows.Next() {
		var a devices.Alert
		var kind, sev, status string
		var first, last sql.NullFloat64
		if err := rows.Scan(&a.ID, &a.RuleID, &a.Rule, &kind, &a.Device, &sev, &status, &a.Message, &a.Metric, &first, &a.FirstAt,
			&last, &a.LastAt, &a.Count, &a.Created, &a.Updated, &a.AckedBy, &a.AckedAt, &a.AckNote, &a.ClearedBy, &a.ClearedAt); err != nil {
			return nil, err
		}
		a.Kind, a.Severity, a.Status = devices.RuleKind(kind), devices.Severity(sev), devices.AlertStatus(status)
		a.FirstValue, a.LastValue = nullable(first), nullable(last)
		out = append(out, a)
	}
	return out, rows.Err()
}

func nullable(f sql.NullFloat64) *float64 {
	if !f.Valid {
		return nil
	}
	v := f.Float64
	return &v
}

func nullFloat(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// LoadAlertEngine implements devices.AlertStore.
func (s *Alerts) LoadAlertEngine(ctx context.Context) (*devices.AlertEngineState, error) {
	st := &devices.AlertEngineState{}
	var cursor string
	err := s.ReadDB.QueryRowContext(ctx, `SELECT value FROM hub_settings WHERE name = $1`, alertCursor).Scan(&cursor)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if cursor != "" {
		st.Started = true
		n, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("alert position %q: %w", cursor, err)
		}
		st.Seq = devices.Seq(n)
	}
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT `+alertCols+` FROM alerts WHERE status <> 'cleared' ORDER BY id`)
	if err != nil {
		return nil, err
	}
	if st.Open, err = scanAlerts(rows); err != nil {
		return nil, err
	}
	rows, err = s.ReadDB.QueryContext(ctx, `SELECT rule_id, device, since, value, win, count FROM alert_states`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r devices.RuleState
		var v sql.NullFloat64
		if err := rows.Scan(&r.Rule, &r.Device, &r.Since, &v, &r.Window, &r.Count); err != nil {
			return nil, err
		}
		r.Value = nullable(v)
		st.States = append(st.States, r)
	}
	return st, rows.Err()
}

// SaveAlertStep implements devices.AlertStore.
func (s *Alerts) SaveAlertStep(ctx context.Context, step *devices.AlertStep) (gone []int64, err error) {
	err = s.write(ctx, func(tx Execer) error {
		gone = gone[:0]
		for _, a := range step.Raised { // a run again: they are new again
			a.ID = 0
		}
		// In the order the changes happened, as far as the one-open-alert
		// index cares: alerts that existed and cleared go first, then the
		// new ones (one raised and cleared within the step goes in cleared,
		// with both events), so a (rule, device) that cleared and raised
		// again in one step never has two open alerts.
		for _, a := range step.Updated {
			res, err := tx.ExecContext(ctx, `UPDATE alerts SET count = $1, last_value = $2, last_at = $3, message = $4, updated = $5
				WHERE id = $6 AND status <> 'cleared'`, a.Count, nullFloat(a.LastValue), a.LastAt, a.Message, a.Updated, a.ID)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				gone = append(gone, a.ID)
			}
		}
		for _, a := range step.Cleared {
			if a.ID == 0 {
				continue // raised in this step: below
			}
			var ackedBy string
			err := tx.QueryRowContext(ctx, `UPDATE alerts SET status = 'cleared', cleared_by = $1, cleared_at = $2, updated = $2,
				last_value = coalesce($3, last_value), last_at = $4, count = $5 WHERE id = $6 AND status <> 'cleared' RETURNING acked_by`,
				a.ClearedBy, a.ClearedAt, nullFloat(a.LastValue), a.LastAt, a.Count, a.ID).Scan(&ackedBy)
			if errors.Is(err, sql.ErrNoRows) {
				gone = append(gone, a.ID)
				continue
			} else if err != nil {
				return err
			}
			a.AckedBy = ackedBy
			if err := addEvent(ctx, tx, a, devices.AlertEvent{Status: devices.AlertCleared, At: a.ClearedAt, By: a.ClearedBy, Value: a.LastValue}, step.Webhooks, step.Payload); err != nil {
				return err
			}
		}
		for _, a := range step.Raised {
			if err := tx.QueryRowContext(ctx, `INSERT INTO alerts (rule_id, rule, kind, device, severity, status, message, metric,
				first_value, first_at, last_value, last_at, count, created, updated, cleared_by, cleared_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id`,
				a.RuleID, a.Rule, string(a.Kind), a.Device, string(a.Severity), string(a.Status), a.Message, a.Metric,
				nullFloat(a.FirstValue), a.FirstAt, nullFloat(a.LastValue), a.LastAt, a.Count, a.Created, a.Updated, a.ClearedBy, a.ClearedAt).Scan(&a.ID); err != nil {
				return fmt.Errorf("raise alert: %w", err)
			}
			if err := addEvent(ctx, tx, a, devices.AlertEvent{Status: devices.AlertActive, At: a.Created, By: "hub", Value: a.FirstValue}, step.Webhooks, step.Payload); err != nil {
				return err
			}
			if a.Status == devices.AlertCleared {
				if err := addEvent(ctx, tx, a, devices.AlertEvent{Status: devices.AlertCleared, At: a.ClearedAt, By: a.ClearedBy, Value: a.LastValue}, step.Webhooks, step.Payload); err != nil {
					return err
				}
			}
		}
		for _, st := range step.States {
			if _, err := tx.ExecContext(ctx, `INSERT INTO alert_states (rule_id, device, since, value, win, count) VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (rule_id, device) DO UPDATE SET since = excluded.since, value = excluded.value, win = excluded.win, count = excluded.count`,
				st.Rule, st.Device, st.Since, nullFloat(st.Value), st.Window, st.Count); err != nil {
				return err
			}
		}
		for _, st := range step.Dropped {
			if _, err := tx.ExecContext(ctx, `DELETE FROM alert_states WHERE rule_id = $1 AND device = $2`, st.Rule, st.Device); err != nil {
				return err
			}
		}
		return setSetting(ctx, tx, alertCursor, strconv.FormatInt(int64(step.Seq), 10))
	})
	if err != nil {
		for _, a := range step.Raised {
			a.ID = 0
		}
		return nil, fmt.Errorf("save alerts: %w", err)
	}
	return gone, nil
}

// addEvent records a change of a and queues its deliveries.
func addEvent(ctx context.Context, tx Execer, a *devices.Alert, ev devices.AlertEvent, webhooks func(int64) []string, payload func(*devices.Alert, devices.AlertEvent, string) []byte) error {
	if err := tx.QueryRowContext(ctx, `INSERT INTO alert_events (alert_id, at, status, actor, note, value) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		a.ID, ev.At, string(ev.Status), ev.By, ev.Note, nullFloat(ev.Value)).Scan(&ev.ID); err != nil {
		return fmt.Errorf("alert event: %w", err)
	}
	if webhooks == nil {
		return nil
	}
	urls := webhooks(a.RuleID)
	if len(urls) == 0 {
		return nil
	}
	key := "telehub-alert-" + strconv.FormatInt(a.ID, 10) + "-" + strconv.FormatInt(ev.ID, 10)
	body := payload(a, ev, key)
	for _, u := range urls {
		if _, err := tx.ExecContext(ctx, `INSERT INTO alert_deliveries (alert_id, event, url, key, status, next_at, created, updated, payload)
			VALUES ($1, $2, $3, $4, 'pending', $5, $5, $5, $6)`, a.ID, string(ev.Status), u, key, ev.At, string(body)); err != nil {
			return fmt.Errorf("queue delivery: %w", err)
		}
	}
	return nil
}

// Alert implements devices.AlertStore.
func (s *Alerts) Alert(ctx context.Context, id int64) (*devices.Alert, error) {
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT `+alertCols+` FROM alerts WHERE id = $1`, id)
	if err != nil {
		return nil, err
	}
	list, err := scanAlerts(rows)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("alert %d: %w", id, devices.ErrNotFound)
	}
	a := &list[0]
	if a.History, err = s.history(ctx, id); err != nil {
		return nil, err
	}
	if a.Deliveries, err = s.deliveries(ctx, id); err != nil {
		return nil, err
	}
	return a, nil
}

func (s *Alerts) history(ctx context.Context, id int64) ([]devices.AlertEvent, error) {
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT id, at, status, actor, note, value FROM alert_events WHERE alert_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []devices.AlertEvent
	for rows.Next() {
		var ev devices.AlertEvent
		var status string
		var v sql.NullFloat64
		if err := rows.Scan(&ev.ID, &ev.At, &status, &ev.By, &ev.Note, &v); err != nil {
			return nil, err
		}
		ev.Status, ev.Value = devices.AlertStatus(status), nullable(v)
		out = append(out, ev)
	}
	return out, rows.Err()
}

const deliveryCols = `id, alert_id, event, url, key, status, attempts, next_at, created, updated, last_error`

func scanDeliveries(rows *sql.Rows, withPayload bool) ([]devices.Delivery, error) {
	defer rows.Close()
	out := []devices.Delivery{}
	for rows.Next() {
		var d devices.Delivery
		var event, status, payload string
		dst := []any{&d.ID, &d.AlertID, &event, &d.URL, &d.Key, &status, &d.Attempts, &d.NextAt, &d.Created, &d.Updated, &d.LastError}
		if withPayload {
			dst = append(dst, &payload)
		}
		if err := rows.Scan(dst...); err != nil {
			return nil, err
		}
		d.Event, d.Status = devices.AlertStatus(event), devices.DeliveryStatus(status)
		if withPayload {
			d.Payload = json.RawMessage(payload)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func (s *Alerts) deliveries(ctx context.Context, alert int64) ([]devices.Delivery, error) {
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT `+deliveryCols+` FROM alert_deliveries WHERE alert_id = $1 ORDER BY id`, alert)
	if err != nil {
		return nil, err
	}
	list, err := scanDeliveries(rows, false)
	if err != nil {
		return nil, err
	}
	for i := range list {
		rows, err := s.ReadDB.QueryContext(ctx, `SELECT at, code, error, ms FROM alert_attempts WHERE delivery_id = $1 ORDER BY id LIMIT 100`, list[i].ID)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var a devices.DeliveryAttempt
			if err := rows.Scan(&a.At, &a.Code, &a.Error, &a.Millis); err != nil {
				rows.Close()
				return nil, err
			}
			list[i].Log = append(list[i].Log, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// ListAlerts implements devices.AlertStore.
func (s *Alerts) ListAlerts(ctx context.Context, f devices.AlertFilter) ([]devices.Alert, error) {
	if f.Limit <= 0 || f.Limit > devices.MaxAlertList {
		return nil, fmt.Errorf("%w: limit must be 1..%d", devices.ErrInvalid, devices.MaxAlertList)
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	switch f.Status {
	case "":
	case devices.AlertOpen:
		where = append(where, `status <> 'cleared'`)
	default:
		add(`status = ?`, string(f.Status))
	}
	if f.Severity != "" {
		add(`severity = ?`, string(f.Severity))
	}
	if f.Device != "" {
		add(`device = ?`, f.Device)
	}
	if f.RuleID != 0 {
		add(`rule_id = ?`, f.RuleID)
	}
	if f.Before > 0 {
		add(`id < ?`, f.Before)
	}
	q := `SELECT ` + alertCols + ` FROM alerts`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	args = append(args, f.Limit)
	q += ` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args))
	rows, err := s.ReadDB.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanAlerts(rows)
}

// AckAlert implements devices.AlertStore.
func (s *Alerts) AckAlert(ctx context.Context, id int64, by, note string, at int64, webhooks func(int64) []string, payload func(*devices.Alert, devices.AlertEvent, string) []byte) (*devices.Alert, error) {
	return s.change(ctx, id, devices.AlertAcknowledged, by, note, at, webhooks, payload)
}

// ClearAlert implements devices.AlertStore.
func (s *Alerts) ClearAlert(ctx context.Context, id int64, by, note string, at int64, webhooks func(int64) []string, payload func(*devices.Alert, devices.AlertEvent, string) []byte) (*devices.Alert, error) {
	return s.change(ctx, id, devices.AlertCleared, by, note, at, webhooks, payload)
}

func (s *Alerts) change(ctx context.Context, id int64, to devices.AlertStatus, by, note string, at int64, webhooks func(int64) []string, payload func(*devices.Alert, devices.AlertEvent, string) []byte) (*devices.Alert, error) {
	var out *devices.Alert
	err := s.write(ctx, func(tx Execer) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+alertCols+` FROM alerts WHERE id = $1`, id)
		if err != nil {
			return err
		}
		list, err := scanAlerts(rows)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return fmt.Errorf("alert %d: %w", id, devices.ErrNotFound)
		}
		a := &list[0]
		switch {
		case a.Status == devices.AlertCleared:
			return fmt.Errorf("%w: alert %d is cleared", devices.ErrConflict, id)
		case to == devices.AlertAcknowledged && a.Status == devices.AlertAcknowledged:
			return fmt.Errorf("%w: alert %d is acknowledged already", devices.ErrConflict, id)
		}
		if to == devices.AlertAcknowledged {
			a.Status, a.AckedBy, a.AckedAt, a.AckNote = to, by, at, note
			_, err = tx.ExecContext(ctx, `UPDATE alerts SET status = $1, acked_by = $2, acked_at = $3, ack_note = $4, updated = $3 WHERE id = $5`,
				string(to), by, at, note, id)
		} else {
			a.Status, a.ClearedBy, a.ClearedAt = to, by, at
			_, err = tx.ExecContext(ctx, `UPDATE alerts SET status = $1, cleared_by = $2, cleared_at = $3, updated = $3 WHERE id = $4`,
				string(to), by, at, id)
		}
		if err != nil {
			return err
		}
		a.Updated = at
		out = a
		return addEvent(ctx, tx, a, devices.AlertEvent{Status: to, At: at, By: by, Note: note}, webhooks, payload)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PruneAlerts implements devices.AlertStore.
func (s *Alerts) PruneAlerts(ctx context.Context, before int64, limit int) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx Execer) error {
		// One selection, four deletes, in one transaction: children first.
		const old = `SELECT id FROM alerts WHERE status = 'cleared' AND cleared_at < $1 ORDER BY id LIMIT $2`
		for _, q := range []string{
			`DELETE FROM alert_attempts WHERE delivery_id IN (SELECT id FROM alert_deliveries WHERE alert_id IN (` + old + `))`,
			`DELETE FROM alert_deliveries WHERE alert_id IN (` + old + `)`,
			`DELETE FROM alert_events WHERE alert_id IN (` + old + `)`,
		} {
			if _, err := tx.ExecContext(ctx, q, before, limit); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM alerts WHERE id IN (`+old+`)`, before, limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune alerts: %w", err)
	}
	return n, nil
}

// AlertCounts implements devices.AlertStore.
func (s *Alerts) AlertCounts(ctx context.Context) (map[devices.AlertStatus]map[devices.Severity]int, error) {
	// Cleared alerts are history: the open ones go through the partial
	// index, the cleared ones are counted whole.
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT status, severity, count(*) FROM alerts GROUP BY status, severity`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[devices.AlertStatus]map[devices.Severity]int{}
	for rows.Next() {
		var st, sev string
		var n int
		if err := rows.Scan(&st, &sev, &n); err != nil {
			return nil, err
		}
		if out[devices.AlertStatus(st)] == nil {
			out[devices.AlertStatus(st)] = map[devices.Severity]int{}
		}
		out[devices.AlertStatus(st)][devices.Severity(sev)] = n
	}
	return out, rows.Err()
}

// DueDeliveries implements devices.AlertStore.
func (s *Alerts) DueDeliveries(ctx context.Context, url string, now int64, limit int) ([]devices.Delivery, error) {
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT `+deliveryCols+`, payload FROM alert_deliveries
		WHERE status = 'pending' AND next_at <= $1 AND url = $2 ORDER BY next_at, id LIMIT $3`, now, url, limit)
	if err != nil {
		return nil, err
	}
	return scanDeliveries(rows, true)
}

// DueReceivers implements devices.AlertStore.
func (s *Alerts) DueReceivers(ctx context.Context, now int64, limit int) ([]string, error) {
	return queryStrings(ctx, s.ReadDB, `SELECT DISTINCT url FROM alert_deliveries WHERE status = 'pending' AND next_at <= $1 LIMIT $2`, now, limit)
}

// RecordDeliveries implements devices.AlertStore.
func (s *Alerts) RecordDeliveries(ctx context.Context, results []devices.DeliveryResult) error {
	return s.write(ctx, func(tx Execer) error {
		for _, r := range results {
			a := r.Attempt
			if _, err := tx.ExecContext(ctx, `INSERT INTO alert_attempts (delivery_id, at, code, error, ms) VALUES ($1, $2, $3, $4, $5)`,
				r.ID, a.At, a.Code, a.Error, a.Millis); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE alert_deliveries SET status = $1, attempts = attempts + 1, next_at = $2, updated = $3, last_error = $4
				WHERE id = $5`, string(r.Status), r.NextAt, a.At, a.Error, r.ID); err != nil {
				return err
			}
		}
		return nil
	})
}

// Setting implements devices.AlertStore.
func (s *Alerts) Setting(ctx context.Context, name string) (string, error) {
	var v string
	err := s.ReadDB.QueryRowContext(ctx, `SELECT value FROM hub_settings WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// SetSetting implements devices.AlertStore.
func (s *Alerts) SetSetting(ctx context.Context, name, value string) error {
	return s.write(ctx, func(tx Execer) error { return setSetting(ctx, tx, name, value) })
}

func setSetting(ctx context.Context, tx Execer, name, value string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO hub_settings (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, value)
	return err
}
