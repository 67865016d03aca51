package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/telehub/telehub/devices"
)

// Twins implements devices.AttributeStore (the device twins) in portable SQL, on the
// same connections as Commands.
type Twins struct {
	// ReadDB serves the reads (statements prepared once); Writes commits
	// the writes, in groups.
	ReadDB *Stmts
	Writes *GroupTx
}

var _ devices.AttributeStore = (*Twins)(nil)

// Attributes implements devices.AttributeStore.
func (s *Twins) Attributes(ctx context.Context, device string) (*devices.Attributes, error) {
	out := &devices.Attributes{Device: device, Shared: map[string]devices.Attribute{}, Client: map[string]devices.Attribute{}}
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT scope, key, value, ts FROM attributes WHERE device = $1`, device)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var scope, key, value string
		var ts int64
		if err := rows.Scan(&scope, &key, &value, &ts); err != nil {
			return nil, err
		}
		m := out.Shared
		if devices.AttributeScope(scope) == devices.AttrClient {
			m = out.Client
		}
		m[key] = devices.Attribute{Value: json.RawMessage(value), TS: ts}
	}
	return out, rows.Err()
}

// SetAttributes implements devices.AttributeStore, in one transaction.
func (s *Twins) SetAttributes(ctx context.Context, device string, scope devices.AttributeScope, set map[string]json.RawMessage, replace bool, at int64) (map[string]json.RawMessage, error) {
	if err := devices.ValidateDeviceID(device); err != nil {
		return nil, err
	}
	if scope != devices.AttrShared && scope != devices.AttrClient {
		return nil, fmt.Errorf("%w: unknown attribute scope %q", devices.ErrInvalid, scope)
	}
	var changed map[string]json.RawMessage
	err := s.Writes.Do(ctx, func(tx Execer) (err error) {
		changed, err = setAttributes(ctx, tx, device, scope, set, replace, at)
		return err
	})
	return changed, err
}

func setAttributes(ctx context.Context, tx Execer, device string, scope devices.AttributeScope, set map[string]json.RawMessage, replace bool, at int64) (map[string]json.RawMessage, error) {
	old := map[string]string{}
	rows, err := tx.QueryContext(ctx, `SELECT key, value FROM attributes WHERE device = $1 AND scope = $2`, device, string(scope))
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return nil, err
		}
		old[k] = v
	}
	rows.Close()
	changed := map[string]json.RawMessage{}
	if replace {
		for k := range old {
			if _, kept := set[k]; !kept {
				changed[k] = json.RawMessage("null")
			}
		}
	}
	for k, v := range set {
		was, had := old[k]
		switch {
		case bytes.Equal(v, []byte("null")):
			if had {
				changed[k] = v
			}
		case !had || was != string(v):
			changed[k] = v
		}
	}
	kept := len(old)
	for k, v := range changed {
		_, had := old[k]
		if string(v) == "null" {
			if had {
				kept--
			}
		} else if !had {
			kept++
		}
	}
	if kept > devices.MaxAttributes {
		return nil, fmt.Errorf("%w: device %q would have %d %s attributes, at most %d", devices.ErrInvalid, device, kept, scope, devices.MaxAttributes)
	}
	for k, v := range changed {
		if string(v) == "null" {
			_, err = tx.ExecContext(ctx, `DELETE FROM attributes WHERE device = $1 AND scope = $2 AND key = $3`, device, string(scope), k)
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO attributes (device, scope, key, value, ts) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (device, scope, key) DO UPDATE SET value = excluded.value, ts = excluded.ts`, device, string(scope), k, string(v), at)
		}
		if err != nil {
			return nil, fmt.Errorf("set attributes: %w", err)
		}
	}
	if len(changed) > 0 {
		b, _ := json.Marshal(changed)
		if _, err := tx.ExecContext(ctx, `INSERT INTO attribute_events (device, scope, at, changes) VALUES ($1, $2, $3, $4)`, device, string(scope), at, string(b)); err != nil {
			return nil, fmt.Errorf("set attributes: %w", err)
		}
	}
	return changed, nil
}

// AttributeEvents implements devices.AttributeStore.
func (s *Twins) AttributeEvents(ctx context.Context, device string, limit int) ([]devices.AttributeEvent, error) {
	if limit <= 0 || limit > 1000 {
		return nil, fmt.Errorf("%w: limit must be 1..1000", devices.ErrInvalid)
	}
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT scope, at, changes FROM attribute_events WHERE device = $1 ORDER BY id DESC LIMIT $2`, device, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []devices.AttributeEvent{}
	for rows.Next() {
		e := devices.AttributeEvent{Device: device}
		var scope, changes string
		if err := rows.Scan(&scope, &e.At, &changes); err != nil {
			return nil, err
		}
		e.Scope = devices.AttributeScope(scope)
		json.Unmarshal([]byte(changes), &e.Change)
		out = append(out, e)
	}
	return out, rows.Err()
}
