package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/telehub/telehub/devices"
)

// SavedBoards implements devices.BoardStore and devices.MetricSettingStore
// (what users compose and see) in SQL that both backends run as it is, like
// Commands.
type SavedBoards struct {
	ReadDB *Stmts
	Writes *GroupTx
}

var (
	_ devices.BoardStore         = (*SavedBoards)(nil)
	_ devices.MetricSettingStore = (*SavedBoards)(nil)
)

// boardSpec is what is stored of a board besides its id, name and times.
type boardSpec struct {
	Window    string             `json:"window,omitempty"`
	Variables []devices.Variable `json:"variables,omitempty"`
	Panels    []devices.Panel    `json:"panels"`
}

// CreateBoard implements devices.BoardStore.
func (s *SavedBoards) CreateBoard(ctx context.Context, b devices.Board) (*devices.Board, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	spec, _ := json.Marshal(boardSpec{b.Window, b.Variables, b.Panels})
	err := s.Writes.Do(ctx, func(tx Execer) error {
		if err := nameFree(ctx, tx, b.Name, 0); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO boards (name, spec, created, updated) VALUES ($1, $2, $3, $4) RETURNING id`,
			b.Name, string(spec), b.Created, b.Updated).Scan(&b.ID)
	})
	if err != nil {
		return nil, fmt.Errorf("create board: %w", err)
	}
	return &b, nil
}

func nameFree(ctx context.Context, tx Execer, name string, id int64) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM boards WHERE name = $1 AND id <> $2`, name, id).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: a board named %q exists", devices.ErrConflict, name)
	}
	return nil
}

// UpdateBoard implements devices.BoardStore.
func (s *SavedBoards) UpdateBoard(ctx context.Context, b devices.Board) (*devices.Board, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	spec, _ := json.Marshal(boardSpec{b.Window, b.Variables, b.Panels})
	err := s.Writes.Do(ctx, func(tx Execer) error {
		if err := nameFree(ctx, tx, b.Name, b.ID); err != nil {
			return err
		}
		err := tx.QueryRowContext(ctx, `UPDATE boards SET name = $1, spec = $2, updated = $3 WHERE id = $4 RETURNING created`,
			b.Name, string(spec), b.Updated, b.ID).Scan(&b.Created)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("board %d: %w", b.ID, devices.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// DeleteBoard implements devices.BoardStore.
func (s *SavedBoards) DeleteBoard(ctx context.Context, id int64) error {
	return s.deleteOne(ctx, `DELETE FROM boards WHERE id = $1`, id, fmt.Errorf("board %d: %w", id, devices.ErrNotFound))
}

// deleteOne runs a DELETE of one row and returns notFound when there was
// none.
func (s *SavedBoards) deleteOne(ctx context.Context, query string, key any, notFound error) error {
	return s.Writes.Do(ctx, func(tx Execer) error {
		res, err := tx.ExecContext(ctx, query, key)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound
		}
		return nil
	})
}

// Board implements devices.BoardStore.
func (s *SavedBoards) Board(ctx context.Context, id int64) (*devices.Board, error) {
	list, err := s.list(ctx, `WHERE id = $1`, id)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("board %d: %w", id, devices.ErrNotFound)
	}
	return &list[0], nil
}

// Boards implements devices.BoardStore.
func (s *SavedBoards) Boards(ctx context.Context) ([]devices.Board, error) { return s.list(ctx, ``) }

func (s *SavedBoards) list(ctx context.Context, where string, args ...any) ([]devices.Board, error) {
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT id, name, spec, created, updated FROM boards `+where+` ORDER BY name, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []devices.Board{}
	for rows.Next() {
		var b devices.Board
		var spec string
		if err := rows.Scan(&b.ID, &b.Name, &spec, &b.Created, &b.Updated); err != nil {
			return nil, err
		}
		var sp boardSpec
		if err := json.Unmarshal([]byte(spec), &sp); err != nil {
			return nil, fmt.Errorf("board %d: stored spec: %w", b.ID, err)
		}
		b.Window, b.Variables, b.Panels = sp.Window, sp.Variables, sp.Panels
		out = append(out, b)
	}
	return out, rows.Err()
}

// metricSpec is what is stored of a metric's settings besides its name.
type metricSpec struct {
	Label    string   `json:"label,omitempty"`
	Unit     string   `json:"unit,omitempty"`
	Decimals *int     `json:"decimals,omitempty"`
	Min      *float64 `json:"min,omitempty"`
	Max      *float64 `json:"max,omitempty"`
}

// MetricSettings implements devices.MetricSettingStore.
func (s *SavedBoards) MetricSettings(ctx context.Context) ([]devices.MetricSetting, error) {
	rows, err := s.ReadDB.QueryContext(ctx, `SELECT metric, spec, updated FROM metric_settings ORDER BY metric`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []devices.MetricSetting{}
	for rows.Next() {
		var m devices.MetricSetting
		var spec string
		if err := rows.Scan(&m.Metric, &spec, &m.Updated); err != nil {
			return nil, err
		}
		var sp metricSpec
		if err := json.Unmarshal([]byte(spec), &sp); err != nil {
			return nil, fmt.Errorf("metric %q: stored settings: %w", m.Metric, err)
		}
		m.Label, m.Unit, m.Decimals, m.Min, m.Max = sp.Label, sp.Unit, sp.Decimals, sp.Min, sp.Max
		out = append(out, m)
	}
	return out, rows.Err()
}

// SetMetricSetting implements devices.MetricSettingStore.
func (s *SavedBoards) SetMetricSetting(ctx context.Context, m devices.MetricSetting) error {
	if err := m.Validate(); err != nil {
		return err
	}
	spec, _ := json.Marshal(metricSpec{m.Label, m.Unit, m.Decimals, m.Min, m.Max})
	return s.Writes.Do(ctx, func(tx Execer) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM metric_settings WHERE metric <> $1`, m.Metric).Scan(&n); err != nil {
			return err
		}
		if n >= devices.MaxMetricSettings {
			return fmt.Errorf("%w: at most %d metrics have settings", devices.ErrInvalid, devices.MaxMetricSettings)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO metric_settings (metric, spec, updated) VALUES ($1, $2, $3)
			ON CONFLICT (metric) DO UPDATE SET spec = excluded.spec, updated = excluded.updated`, m.Metric, string(spec), m.Updated)
		return err
	})
}

// DeleteMetricSetting implements devices.MetricSettingStore.
func (s *SavedBoards) DeleteMetricSetting(ctx context.Context, metric string) error {
	return s.deleteOne(ctx, `DELETE FROM metric_settings WHERE metric = $1`, metric, fmt.Errorf("metric %q has no settings: %w", metric, devices.ErrNotFound))
}
