package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/telehub/telehub/store"
)

//go:embed migration/*.sql
var migrationFS embed.FS

// ApplicationID marks a SQLite file as Telehub's (PRAGMA application_id,
// "THUB"). Open refuses a database that has tables but another id, so a
// mistyped --db never writes into another program's file.
const ApplicationID = 0x54485542

// Defaults for DB fields.
const (
	DefaultBusyTimeout = 5 * time.Second
	DefaultMaxReaders  = 4
	// DefaultWriterCacheKiB keeps the hot index pages of thousands of
	// devices in memory; SQLite's own default is 2 MiB.
	DefaultWriterCacheKiB = 64 << 10
	DefaultReaderCacheKiB = 16 << 10
)

// DB is Telehub's SQLite database: one writer connection (used only by
// Writer) and a pool of read-only connections. Build it with NewDB, adjust
// the fields, then call Open.
type DB struct {
	// Path is the database file. Required.
	Path string
	// BusyTimeout is how long a connection waits for a lock. Default DefaultBusyTimeout.
	BusyTimeout time.Duration
	// MaxReaders caps the read connections. Default DefaultMaxReaders.
	MaxReaders int
	// WriterCacheKiB and ReaderCacheKiB size the page cache of the writer
	// connection and of each reader, in KiB. Defaults DefaultWriterCacheKiB
	// and DefaultReaderCacheKiB.
	WriterCacheKiB, ReaderCacheKiB int
	// Now returns the current time; tests replace it. Default time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default() with component=store.
	Logger *slog.Logger

	write *sql.DB
	read  *sql.DB
	// admin writes the rare rows outside the message path (credentials and
	// tokens): the Writer holds the write pool's one connection.
	admin *sql.DB
}

// NewDB returns a DB for path with every field at its default.
func NewDB(path string) *DB {
	return &DB{
		Path:           path,
		BusyTimeout:    DefaultBusyTimeout,
		MaxReaders:     DefaultMaxReaders,
		WriterCacheKiB: DefaultWriterCacheKiB,
		ReaderCacheKiB: DefaultReaderCacheKiB,
		Now:            time.Now,
		Logger:         slog.Default().With("component", "store"),
	}
}

func (db *DB) dsn(readOnly bool) string {
	q := []string{
		fmt.Sprintf("_pragma=busy_timeout(%d)", db.BusyTimeout.Milliseconds()),
		"_pragma=foreign_keys(1)",
		// FULL: in WAL mode NORMAL may lose the last commits on power loss,
		// and a PUBACK promises the row is on disk. With group commit the
		// extra fsync is shared by the whole batch.
		"_pragma=synchronous(FULL)",
		// Statement journals (multi-row inserts) and sorts stay in memory
		// rather than in temporary files.
		"_pragma=temp_store(MEMORY)",
	}
	if readOnly {
		q = append(q, "_pragma=query_only(1)", fmt.Sprintf("_pragma=cache_size(-%d)", db.ReaderCacheKiB))
	} else {
		// Index pages of many devices are touched by every batch.
		q = append(q, fmt.Sprintf("_pragma=cache_size(-%d)", db.WriterCacheKiB))
	}
	// The writer sets journal_mode=WAL itself, after checkApplication: a
	// pragma here would convert a foreign file before it could be refused.
	return "file:" + db.Path + "?" + strings.Join(q, "&")
}

// Open opens or creates the database, checks that it is Telehub's, and
// applies pending migrations. Errors name the file.
func (db *DB) Open() (err error) {
	if db.Path == "" {
		return errors.New("open db: path required")
	}
	if strings.ContainsAny(db.Path, "?#") {
		return fmt.Errorf("open db %s: path must not contain '?' or '#'", db.Path)
	}
	if db.Now == nil {
		db.Now = time.Now
	}
	if db.Logger == nil {
		db.Logger = slog.Default().With("component", "store")
	}
	if db.MaxReaders <= 0 {
		db.MaxReaders = DefaultMaxReaders
	}
	if db.WriterCacheKiB <= 0 {
		db.WriterCacheKiB = DefaultWriterCacheKiB
	}
	if db.ReaderCacheKiB <= 0 {
		db.ReaderCacheKiB = DefaultReaderCacheKiB
	}
	if dir := filepath.Dir(db.Path); dir != "" {
		if _, err := os.Stat(dir); err != nil {
			return fmt.Errorf("open db %s: %w", db.Path, err)
		}
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()

	if db.write, err = sql.Open("sqlite", db.dsn(false)); err != nil {
		return fmt.Errorf("open db %s: %w", db.Path, err)
	}
	db.write.SetMaxOpenConns(1)
	db.write.SetConnMaxLifetime(0)
	db.write.SetConnMaxIdleTime(0)
	if err := db.checkApplication(); err != nil {
		return fmt.Errorf("open db %s: %w", db.Path, err)
	}
	if err := db.migrate(); err != nil {
		return fmt.Errorf("open db %s: migrate: %w", db.Path, err)
	}

	if db.read, err = sql.Open("sqlite", db.dsn(true)); err != nil {
		return fmt.Errorf("open db %s: %w", db.Path, err)
	}
	db.read.SetMaxOpenConns(db.MaxReaders)
	db.read.SetMaxIdleConns(db.MaxReaders)
	if err := db.read.Ping(); err != nil {
		return fmt.Errorf("open db %s: %w", db.Path, err)
	}
	if db.admin, err = sql.Open("sqlite", db.dsn(false)); err != nil {
		return fmt.Errorf("open db %s: %w", db.Path, err)
	}
	db.admin.SetMaxOpenConns(1)
	db.admin.SetConnMaxIdleTime(time.Minute)
	return nil
}

// checkApplication refuses a file that is not SQLite or belongs to another
// program, and stamps a new database with ApplicationID.
func (db *DB) checkApplication() error {
	var appID, tables int
	if err := db.write.QueryRow(`PRAGMA application_id`).Scan(&appID); err != nil {
		return describe(err)
	}
	if err := db.write.QueryRow(`SELECT count(*) FROM sqlite_schema`).Scan(&tables); err != nil {
		return describe(err)
	}
	switch {
	case appID == ApplicationID:
	case appID == 0 && tables == 0:
		if _, err := db.write.Exec(fmt.Sprintf(`PRAGMA application_id = %d`, ApplicationID)); err != nil {
			return describe(err)
		}
	default:
		return fmt.Errorf("not a Telehub database (application_id %#x, %d schema objects); refusing to touch it", appID, tables)
	}
	// WAL is a property of the file: set once here, it holds for every
	// connection, readers included.
	var mode string
	if err := db.write.QueryRow(`PRAGMA journal_mode = WAL`).Scan(&mode); err != nil {
		return describe(err)
	}
	if mode != "wal" {
		return fmt.Errorf("cannot use WAL journal mode (got %q)", mode)
	}
	return nil
}

// describe turns SQLite's terse errors into ones a user can act on.
func describe(err error) error {
	var se *msqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB:
			return fmt.Errorf("not a SQLite database (is it corrupt or another kind of file?): %w", err)
		case sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM:
			return fmt.Errorf("cannot open or write the file (check the path and permissions): %w", err)
		case sqlite3.SQLITE_CORRUPT:
			return fmt.Errorf("database is corrupt: %w", err)
		}
	}
	return err
}

// rowError reports whether err is about the row written (a constraint, a
// type or size limit) rather than the database as a whole (full, busy,
// unreadable): writing the other rows alone can then succeed.
func rowError(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_RANGE:
		return true
	}
	return false
}

// migrate applies each embedded migration not yet recorded, in name order,
// each in its own transaction.
func (db *DB) migrate() error {
	if _, err := db.write.Exec(`CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied INTEGER NOT NULL)`); err != nil {
		return describe(err)
	}
	names, err := fs.Glob(migrationFS, "migration/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		if err := db.migrateFile(name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func (db *DB) migrateFile(name string) error {
	tx, err := db.write.Begin()
	if err != nil {
		return describe(err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM migrations WHERE name = ?`, name).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	body, err := fs.ReadFile(migrationFS, name)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(string(body)); err != nil {
		return err
	}
	if _, err := tx.Exec(`INSERT INTO migrations (name, applied) VALUES (?, ?)`, name, db.Now().UnixMilli()); err != nil {
		return err
	}
	return tx.Commit()
}

// Close closes the connection pools. It is safe after a failed Open and
// returns the first error.
func (db *DB) Close() error {
	var first error
	for _, c := range []*sql.DB{db.read, db.write, db.admin} {
		if c == nil {
			continue
		}
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	db.read, db.write, db.admin = nil, nil, nil
	return first
}

// Backup writes a consistent copy of the database to path with VACUUM INTO,
// while the hub keeps writing: the copy is the database as of one read
// transaction, compacted. path must not exist. The copy is an ordinary
// database file: restore it by stopping the hub and putting it in place of
// --db (removing the old -wal and -shm files).
func (db *DB) Backup(ctx context.Context, path string) error {
	if path == "" {
		return errors.New("backup: path required")
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("backup %s: file exists; refusing to overwrite it", path)
	}
	// VACUUM INTO needs a connection that may write (the new file); the
	// writer's pool is busy, so open one for this.
	conn, err := sql.Open("sqlite", "file:"+db.Path+fmt.Sprintf("?_pragma=busy_timeout(%d)", db.BusyTimeout.Milliseconds()))
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		return fmt.Errorf("backup %s: %w", path, describe(err))
	}
	return nil
}

// ReadDB returns the pool of read-only connections, for tools and tests that
// query the file directly.
func (db *DB) ReadDB() *sql.DB { return db.read }

// IntegrityCheck runs PRAGMA integrity_check and returns nil when it reports "ok".
func (db *DB) IntegrityCheck(ctx context.Context) error {
	var res string
	if err := db.read.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&res); err != nil {
		return err
	}
	if res != "ok" {
		return fmt.Errorf("integrity check: %s", res)
	}
	return nil
}

// Credentials is the credential store on a SQLite database.
type Credentials = store.Credentials

// NewCredentials returns the credential store of an open db: lookups on
// the read pool, writes on a connection of their own.
func NewCredentials(db *DB) *Credentials {
	return &store.Credentials{ReadDB: db.read, WriteDB: db.admin, Now: db.Now, IsUnique: isUniqueViolation}
}

// isUniqueViolation reports a PRIMARY KEY or UNIQUE constraint failure.
func isUniqueViolation(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) && (se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE)
}

// OpenReadOnly opens the Telehub database at path for reading only, with
// no migration and no change to the file (telehub migrate reads it so). It
// refuses a file that is not Telehub's.
func OpenReadOnly(path string) (*sql.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var id int64
	if err := db.QueryRow(`PRAGMA application_id`).Scan(&id); err != nil || id != ApplicationID {
		db.Close()
		if err == nil {
			err = errors.New("not a Telehub database")
		}
		return nil, fmt.Errorf("open %s: %w", path, describe(err))
	}
	return db, nil
}
