package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ImportProgress is told how far an import is.
type ImportProgress func(table string, done, total int64, rate float64)

// DefaultImportChunk is how many messages one step of an import copies.
const DefaultImportChunk = 10000

// ImportSQLite copies a Telehub SQLite database (src, opened read-only) into
// db: devices, messages, credentials and tokens, retention overrides,
// status events, commands and attributes, alert rules and alerts with
// their webhook outbox and the evaluator's position, boards, and the
// counters.
// Messages go in chunks of chunk rows, each with the counter in one
// transaction, so that
// an import stopped halfway resumes where it stopped (the next run starts
// above the highest seq copied); the other tables are copied whole and
// merged (rows there already are kept). The hub must not be running on db
// meanwhile. src is only read.
func ImportSQLite(ctx context.Context, db *DB, src *sql.DB, chunk int, progress ImportProgress) error {
	if chunk <= 0 {
		chunk = DefaultImportChunk
	}
	if progress == nil {
		progress = func(string, int64, int64, float64) {}
	}
	pool := db.Pool
	// Small tables first: messages reference devices.
	for _, t := range []struct {
		name, from, into string
		cols             int
	}{
		{"devices", `SELECT id, name, first_seen, last_seen, message_count, last_seq, status, status_at, latest FROM devices`,
			`INSERT INTO devices (id, name, first_seen, last_seen, message_count, last_seq, status, status_at, latest) OVERRIDING SYSTEM VALUE
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`, 9},
		{"device_credentials", `SELECT device, token_hash, created FROM device_credentials`,
			`INSERT INTO device_credentials (device, token_hash, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, 3},
		{"api_tokens", `SELECT name, token_hash, scope, created FROM api_tokens`,
			`INSERT INTO api_tokens (name, token_hash, scope, created) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, 4},
		{"retention_overrides", `SELECT device, retention FROM retention_overrides`,
			`INSERT INTO retention_overrides (device, retention) VALUES ($1, $2) ON CONFLICT DO NOTHING`, 2},
		{"device_events", `SELECT id, device_id, at, status, reason FROM device_events`,
			`INSERT INTO device_events (id, device_id, at, status, reason) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, 5},
		{"commands", `SELECT id, device, method, params, oneway, status, created, expires, updated, response, error,
			CASE WHEN status IN ('queued', 'sent') OR status = 'delivered' AND oneway = 0 THEN 1 ELSE 0 END FROM commands`,
			`INSERT INTO commands (id, device, method, params, oneway, status, created, expires, updated, response, error, is_open) OVERRIDING SYSTEM VALUE
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`, 12},
		{"command_events", `SELECT id, command_id, at, status, note FROM command_events`,
			`INSERT INTO command_events (id, command_id, at, status, note) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, 5},
		{"attributes", `SELECT device, scope, key, value, ts FROM attributes`,
			`INSERT INTO attributes (device, scope, key, value, ts) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, 5},
		{"alert_rules", `SELECT id, name, source, spec, created, updated FROM alert_rules`,
			`INSERT INTO alert_rules (id, name, source, spec, created, updated) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, 6},
		{"alerts", `SELECT id, rule_id, rule, kind, device, severity, status, message, metric, first_value, first_at, last_value, last_at, count, created, updated, acked_by, acked_at, ack_note, cleared_by, cleared_at FROM alerts`,
			`INSERT INTO alerts (id, rule_id, rule, kind, device, severity, status, message, metric, first_value, first_at, last_value, last_at, count, created, updated, acked_by, acked_at, ack_note, cleared_by, cleared_at) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) ON CONFLICT DO NOTHING`, 21},
		{"alert_events", `SELECT id, alert_id, at, status, actor, note, value FROM alert_events`,
			`INSERT INTO alert_events (id, alert_id, at, status, actor, note, value) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`, 7},
		{"alert_states", `SELECT rule_id, device, since, value, win, count FROM alert_states`,
			`INSERT INTO alert_states (rule_id, device, since, value, win, count) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, 6},
		{"alert_deliveries", `SELECT id, alert_id, event, url, key, status, attempts, next_at, created, updated, last_error, payload FROM alert_deliveries`,
			`INSERT INTO alert_deliveries (id, alert_id, event, url, key, status, attempts, next_at, created, updated, last_error, payload) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`, 12},
		{"alert_attempts", `SELECT id, delivery_id, at, code, error, ms FROM alert_attempts`,
			`INSERT INTO alert_attempts (id, delivery_id, at, code, error, ms) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, 6},
		{"boards", `SELECT id, name, spec, created, updated FROM boards`,
			`INSERT INTO boards (id, name, spec, created, updated) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, 5},
		{"metric_settings", `SELECT metric, spec, updated FROM metric_settings`,
			`INSERT INTO metric_settings (metric, spec, updated) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, 3},
		{"hub_settings", `SELECT name, value FROM hub_settings`,
			`INSERT INTO hub_settings (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING`, 2},
	} {
		var exists bool
		src.QueryRowContext(ctx, `SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?`, t.name).Scan(&exists)
		if !exists {
			continue // a file from before the table existed
		}
		if err := copyTable(ctx, pool, src, t.name, t.from, t.into, t.cols, progress); err != nil {
			return fmt.Errorf("import %s: %w", t.name, err)
		}
	}
	// Identity columns continue above what was copied.
	for _, t := range []string{"devices", "device_events", "commands", "command_events", "alert_rules", "alerts", "alert_events", "alert_deliveries", "alert_attempts", "boards"} {
		if _, err := pool.Exec(ctx, `SELECT setval(pg_get_serial_sequence('`+t+`', 'id'), coalesce((SELECT max(id) FROM `+t+`), 0) + 1, false)`); err != nil {
			return fmt.Errorf("import %s: %w", t, err)
		}
	}
	before, err := copyMessages(ctx, db, src, chunk, progress)
	if err != nil {
		return fmt.Errorf("import messages: %w", err)
	}
	// The counters: the highest seq ever assigned, and how far the device
	// rows are complete, so that the hub folds in the rest at start. Into
	// an empty database the device rows came from the file, complete up to
	// its summary_seq; on a later run the rows already there were kept,
	// complete only up to what was here before this run.
	var lastSeq, summarySeq int64
	src.QueryRowContext(ctx, `SELECT coalesce((SELECT value FROM meta WHERE key = 'last_seq'), 0)`).Scan(&lastSeq)
	src.QueryRowContext(ctx, `SELECT coalesce((SELECT value FROM meta WHERE key = 'summary_seq'), 0)`).Scan(&summarySeq)
	if _, err := pool.Exec(ctx, `UPDATE meta SET value = greatest(value, $1) WHERE key = 'last_seq'`, lastSeq); err != nil {
		return err
	}
	if before == 0 {
		_, err = pool.Exec(ctx, `UPDATE meta SET value = $1 WHERE key = 'summary_seq'`, summarySeq)
	} else {
		_, err = pool.Exec(ctx, `UPDATE meta SET value = least(value, $1) WHERE key = 'summary_seq'`, before)
	}
	return err
}

// copyTable copies one small table, row by row, in one transaction.
func copyTable(ctx context.Context, pool interface {
	Begin(context.Context) (pgx.Tx, error)
}, src *sql.DB, name, from, into string, cols int, progress ImportProgress) error {
	rows, err := src.QueryContext(ctx, from)
	if err != nil {
		return err
	}
	defer rows.Close()
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	vals := make([]any, cols)
	ptrs := make([]any, cols)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		for i, v := range vals {
			if b, ok := v.([]byte); ok && name != "device_credentials" && name != "api_tokens" {
				vals[i] = string(b) // TEXT read as bytes
			}
		}
		if _, err := tx.Exec(ctx, into, vals...); err != nil {
			return err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	progress(name, n, n, 0)
	return nil
}

// copyMessages copies the messages above the highest seq already in db, a
// chunk at a time, each chunk and the counter in one transaction. It
// returns that highest seq, from before it began.
func copyMessages(ctx context.Context, db *DB, src *sql.DB, chunk int, progress ImportProgress) (before int64, err error) {
	var after int64
	if err := db.Pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM messages`).Scan(&after); err != nil {
		return 0, err
	}
	before = after
	var total, done int64
	src.QueryRowContext(ctx, `SELECT count(*) FROM messages`).Scan(&total)
	src.QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE seq <= ?`, after).Scan(&done)
	start, startDone := time.Now(), done
	for {
		rows, err := src.QueryContext(ctx, `SELECT seq, device_id, ts, received, topic, kind, qos, flags, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?`, after, chunk)
		if err != nil {
			return before, err
		}
		var batch [][]any
		for rows.Next() {
			var seq, dev, ts, received, kind, qos, flags int64
			var topic string
			var payload []byte
			if err := rows.Scan(&seq, &dev, &ts, &received, &topic, &kind, &qos, &flags, &payload); err != nil {
				rows.Close()
				return before, err
			}
			if payload == nil {
				payload = []byte{}
			}
			batch = append(batch, []any{seq, dev, ts, received, topic, int16(kind), int16(qos), int32(flags), payload})
			after = seq
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return before, err
		}
		if len(batch) == 0 {
			progress("messages", done, total, float64(done-startDone)/max(time.Since(start).Seconds(), 1e-9))
			return before, nil
		}
		err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"messages"}, messageColumns, pgx.CopyFromRows(batch)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE meta SET value = greatest(value, $1) WHERE key = 'last_seq'`, after)
			return err
		})
		if err != nil {
			return before, err
		}
		done += int64(len(batch))
		progress("messages", done, total, float64(done-startDone)/max(time.Since(start).Seconds(), 1e-9))
	}
}
