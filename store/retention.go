package store

import (
	"context"
	"fmt"
	"time"

	"github.com/telehub/telehub/devices"
)

// Retention is what both backends keep of retention settings: the hub's
// period and each device's own (by name, so that it outlives a device
// deleted and created again), with the RetentionService calls on top. A
// backend embeds it in its writer; every method runs on the write loop
// (through the Pipeline given to Open), in SQL both backends run as it is.
type Retention struct {
	// Hub is the hub's retention; 0 keeps everything.
	Hub time.Duration

	pipe      *Pipeline
	db        Execer
	sums      *Summaries
	overrides map[string]time.Duration // write loop only
}

// OpenRetention loads the devices' own periods through db, which the
// write loop uses (SQLite: the writer's connection).
func (r *Retention) OpenRetention(ctx context.Context, pipe *Pipeline, db Execer, sums *Summaries) error {
	r.pipe, r.db, r.sums = pipe, db, sums
	r.overrides = make(map[string]time.Duration)
	rows, err := db.QueryContext(ctx, `SELECT device, retention FROM retention_overrides`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var ms int64
		if err := rows.Scan(&name, &ms); err != nil {
			return err
		}
		r.overrides[name] = time.Duration(ms) * time.Millisecond
	}
	return rows.Err()
}

// Keep returns how long device's messages are kept (0: forever); write
// loop only.
func (r *Retention) Keep(device string) time.Duration {
	if d, own := r.overrides[device]; own {
		return d
	}
	return r.Hub
}

// SetRetention implements devices.RetentionService: a device's own
// retention (0 keeps all its messages).
func (r *Retention) SetRetention(ctx context.Context, device string, d time.Duration) error {
	if err := devices.ValidateDeviceID(device); err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("%w: retention must not be negative", devices.ErrInvalid)
	}
	return r.pipe.Run(ctx, func() error {
		if _, err := r.db.ExecContext(ctx, `INSERT INTO retention_overrides (device, retention) VALUES ($1, $2)
			ON CONFLICT (device) DO UPDATE SET retention = excluded.retention`, device, d.Milliseconds()); err != nil {
			return err
		}
		r.overrides[device] = d
		r.untrim(device)
		return nil
	})
}

// ClearRetention implements devices.RetentionService: the device follows
// the hub's retention again.
func (r *Retention) ClearRetention(ctx context.Context, device string) error {
	return r.pipe.Run(ctx, func() error {
		if _, err := r.db.ExecContext(ctx, `DELETE FROM retention_overrides WHERE device = $1`, device); err != nil {
			return err
		}
		delete(r.overrides, device)
		r.untrim(device)
		return nil
	})
}

// RetentionOf implements devices.RetentionService.
func (r *Retention) RetentionOf(ctx context.Context, device string) (time.Duration, bool, error) {
	var d time.Duration
	var own bool
	err := r.pipe.Run(ctx, func() error {
		d, own = r.overrides[device]
		if !own {
			d = r.Hub
		}
		return nil
	})
	return d, own, err
}

// untrim makes the next retention pass look at device again.
func (r *Retention) untrim(device string) {
	if d := r.sums.Get(device); d != nil {
		d.TrimmedTo = 0
	}
}
