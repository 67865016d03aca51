// Package storetest holds test and benchmark helpers for code that uses the
// store: a real database file in a temporary directory, plain database/sql
// access to check rows, and the raw-insert baseline that benchmarks compare
// the hub against.
package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/telehub/telehub/store/sqlite"
)

// MustOpenDB opens a database file in a temporary directory with migrations
// applied; it is closed at the end of the test.
func MustOpenDB(tb testing.TB) *sqlite.DB {
	tb.Helper()
	return MustOpenDBPath(tb, filepath.Join(tb.TempDir(), "telehub.db"))
}

// MustOpenDBPath opens the database at path; it is closed at the end of the test.
func MustOpenDBPath(tb testing.TB, path string) *sqlite.DB {
	tb.Helper()
	db := sqlite.NewDB(path)
	if err := db.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// MustOpenWriter starts a Writer on db; it is closed at the end of the test.
func MustOpenWriter(tb testing.TB, db *sqlite.DB) *sqlite.Writer {
	tb.Helper()
	w := sqlite.NewWriter(db)
	if err := w.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { w.Close(context.Background()) })
	return w
}

// RawDB opens the file with plain database/sql, to check rows independently
// of the store's own code.
func RawDB(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// RawInsertRate is the baseline the hub is measured against: n rows for
// devices 1,000 devices inserted into a fresh database with Telehub's schema
// and durability (WAL, synchronous=FULL), one prepared single-row INSERT per
// row, in transactions of batch rows, with no device bookkeeping. It returns
// rows per second.
func RawInsertRate(tb testing.TB, n, batch int) float64 {
	tb.Helper()
	db := MustOpenDB(tb)
	raw := RawDB(tb, db.Path)
	raw.SetMaxOpenConns(1)
	if _, err := raw.Exec(`PRAGMA synchronous = FULL`); err != nil {
		tb.Fatal(err)
	}
	for d := 1; d <= 1000; d++ {
		if _, err := raw.Exec(`INSERT INTO devices (id, name, first_seen, last_seen) VALUES (?, ?, 0, 0)`, d, fmt.Sprint("dev-", d)); err != nil {
			tb.Fatal(err)
		}
	}
	payload := []byte(`{"n":123456,"temp":21.5,"hum":40}`)
	start := time.Now()
	for i := 0; i < n; i += batch {
		tx, err := raw.Begin()
		if err != nil {
			tb.Fatal(err)
		}
		stmt, err := tx.Prepare(`INSERT INTO messages (seq, device_id, ts, received, topic, kind, qos, flags, payload) VALUES (?,?,?,?,?,?,?,?,?)`)
		if err != nil {
			tb.Fatal(err)
		}
		for j := i; j < min(i+batch, n); j++ {
			dev := j%1000 + 1
			if _, err := stmt.Exec(j+1, dev, int64(j), int64(j), fmt.Sprintf("devices/dev-%d/telemetry", dev), 1, 1, 0, payload); err != nil {
				tb.Fatal(err)
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
