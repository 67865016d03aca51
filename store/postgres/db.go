// Package postgres is Telehub's PostgreSQL backend (pgx v5): the schema and
// its migrations, a writer on the shared ingest pipeline (store.Pipeline)
// whose every commit takes its range of sequence numbers from a counter row
// inside its own transaction, and the readers behind the REST API and
// WebSocket replay. It passes the same conformance suite as SQLite
// (store/storetest).
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/telehub/telehub/store"
)

//go:embed migration/*.sql
var migrationFS embed.FS

// migrationLock is the advisory lock key that serialises migrations of
// hubs starting at once ("THUB").
const migrationLock = 0x54485542

// DefaultMaxConns caps the pool: the writer uses one connection at a time,
// readers the rest.
const DefaultMaxConns = 8

// DB is a Telehub database on PostgreSQL.
type DB struct {
	// URL is the connection string, postgres://user@host:port/db?....
	URL string
	// Pool is the connection pool; SQL is the same pool through
	// database/sql, for the parts of the store written in portable SQL.
	Pool *pgxpool.Pool
	SQL  *sql.DB
	// Now returns the current time; tests replace it. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// OpenDB connects to the database at url and applies pending migrations.
// Errors name the server without the password.
func OpenDB(ctx context.Context, rawURL string, logger *slog.Logger) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if cfg.MaxConns < DefaultMaxConns && !hasParam(rawURL, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if logger == nil {
		logger = slog.Default()
	}
	db := &DB{URL: rawURL, Now: time.Now, Logger: logger.With("component", "store")}
	name := redacted(rawURL)
	if db.Pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", name, err)
	}
	if err := db.Pool.Ping(ctx); err != nil {
		db.Pool.Close()
		return nil, fmt.Errorf("open postgres %s: %w", name, err)
	}
	db.SQL = stdlib.OpenDBFromPool(db.Pool)
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres %s: migrate: %w", name, err)
	}
	return db, nil
}

func hasParam(rawURL, key string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && u.Query().Has(key)
}

func redacted(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}

// Close closes the pool.
func (db *DB) Close() error {
	if db.SQL != nil {
		db.SQL.Close()
	}
	db.Pool.Close()
	return nil
}

// migrate applies each embedded migration not yet recorded, in name order,
// each in its own transaction, under an advisory lock so that hubs starting
// together take turns.
func (db *DB) migrate(ctx context.Context) error {
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return err
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, migrationLock)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS migrations (name text PRIMARY KEY, applied bigint NOT NULL)`); err != nil {
		return err
	}
	names, err := fs.Glob(migrationFS, "migration/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		var done bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM migrations WHERE name = $1)`, name).Scan(&done); err != nil {
			return err
		}
		if done {
			continue
		}
		body, err := fs.ReadFile(migrationFS, name)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO migrations (name, applied) VALUES ($1, $2)`, name, db.Now().UnixMilli())
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		db.Logger.Info("applied migration", "name", name)
	}
	return nil
}

// isUniqueViolation reports a PRIMARY KEY or UNIQUE constraint failure.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// NewCredentials returns the credential store of db.
func NewCredentials(db *DB) *store.Credentials {
	return &store.Credentials{ReadDB: db.SQL, WriteDB: db.SQL, Now: db.Now, IsUnique: isUniqueViolation}
}
