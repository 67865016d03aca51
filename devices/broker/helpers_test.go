package broker_test

import (
	"database/sql"
	"testing"

	_ "modernc.org/sqlite"
)

// MustRaw opens the database file with plain database/sql.
func MustRaw(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}
