package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/sqlite"
)

func TestDB_Open(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		db := MustOpenDB(t)
		var mode string
		var appID int
		raw := rawDB(t, db.Path)
		raw.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
		raw.QueryRow(`PRAGMA application_id`).Scan(&appID)
		if mode != "wal" || appID != sqlite.ApplicationID {
			t.Fatalf("journal_mode=%s application_id=%#x, want wal %#x", mode, appID, sqlite.ApplicationID)
		}
		db.Close()
		// Reopening applies no migration twice.
		MustOpenDBPath(t, db.Path)
	})

	t.Run("ErrForeignDatabase", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "other.db")
		other, _ := sql.Open("sqlite", "file:"+path)
		if _, err := other.Exec(`CREATE TABLE invoices (id INTEGER PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		other.Close()
		before, _ := os.ReadFile(path)
		err := sqlite.NewDB(path).Open()
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a Telehub database") {
			t.Fatalf("err=%v, want a refusal naming %s", err, path)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
			t.Fatal("foreign database was modified")
		}
	})

	t.Run("ErrNotSQLite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "garbage.db")
		junk := bytes.Repeat([]byte("not a database at all "), 400)
		os.WriteFile(path, junk, 0o644)
		err := sqlite.NewDB(path).Open()
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a SQLite database") {
			t.Fatalf("err=%v, want a clear error naming %s", err, path)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(junk, after) {
			t.Fatal("file was overwritten")
		}
	})

	t.Run("ErrMissingDirectory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "no", "such", "dir", "t.db")
		if err := sqlite.NewDB(path).Open(); err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("err=%v, want an error naming %s", err, path)
		}
	})

	t.Run("ErrPathRequired", func(t *testing.T) {
		if err := sqlite.NewDB("").Open(); err == nil {
			t.Fatal("no error for empty path")
		}
	})
}

// TestDB_Backup: a backup taken while messages are being written is a
// consistent database with every message committed before it started, and
// restores into a working hub database.
func TestDB_Backup(t *testing.T) {
	db := MustOpenDB(t)
	w := MustOpenWriter(t, db)
	var in []devices.Message
	for i := 0; i < 3000; i++ {
		in = append(in, msg(fmt.Sprint("b", i%5), i))
	}
	writeAll(t, w, in[:1000])
	done := make(chan struct{})
	go func() { defer close(done); writeAll(t, w, in[1000:]) }() // keeps writing during the backup
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := db.Backup(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := db.Backup(context.Background(), path); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second backup to the same file: %v, want a refusal", err)
	}
	restored := MustOpenDBPath(t, path)
	if err := restored.IntegrityCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
	var n int
	rawDB(t, path).QueryRow(`SELECT count(*) FROM messages`).Scan(&n)
	if n < 1000 || n > 3000 {
		t.Fatalf("backup has %d messages, want 1000 to 3000", n)
	}
	w2 := MustOpenWriter(t, restored)
	if got := w2.LastSeq(); got != devices.Seq(n) {
		t.Fatalf("restored LastSeq=%d, want %d", got, n)
	}
}
