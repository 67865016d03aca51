package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/telehub/telehub/store"
)

// TestGroupTx: concurrent callers share transactions; a caller whose part
// fails gets its error and leaves nothing behind, the others commit.
func TestGroupTx(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "g.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	g := &store.GroupTx{DB: db}
	bad := errors.New("refused")
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.Do(context.Background(), func(tx store.Execer) error {
				if _, err := tx.ExecContext(context.Background(), `INSERT INTO t (k, v) VALUES ($1, $2)`, i, fmt.Sprint("v", i)); err != nil {
					return err
				}
				if i%10 == 7 {
					return bad // after its write: the savepoint must undo it
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%10 == 7) != errors.Is(err, bad) || i%10 != 7 && err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM t`).Scan(&n)
	var leaked int
	db.QueryRow(`SELECT count(*) FROM t WHERE k % 10 = 7`).Scan(&leaked)
	if n != 180 || leaked != 0 {
		t.Fatalf("%d rows (%d of failed callers), want 180 and 0", n, leaked)
	}
}

// TestGroupTxSubmit: writes one caller submits without waiting are applied
// in the order submitted, after what it wrote with Do, each answered on its
// own; the caller is not held up by the commit.
func TestGroupTxSubmit(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "g.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (n INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	g := &store.GroupTx{DB: db}
	ctx := context.Background()
	insert := func(v string) func(store.Execer) error {
		return func(tx store.Execer) error {
			if v == "refused" {
				return errors.New(v)
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO t (v) VALUES ($1)`, v)
			return err
		}
	}
	if err := g.Do(ctx, insert("first")); err != nil {
		t.Fatal(err)
	}
	var waits []func(context.Context) error
	for _, v := range []string{"a", "b", "refused", "c", "d"} {
		waits = append(waits, g.Submit(insert(v)))
	}
	for i, w := range waits {
		if err := w(ctx); (i == 2) != (err != nil) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	rows, err := db.Query(`SELECT v FROM t ORDER BY n`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var v string
		rows.Scan(&v)
		got = append(got, v)
	}
	if fmt.Sprint(got) != "[first a b c d]" {
		t.Fatalf("rows in order %v, want [first a b c d]", got)
	}
}

// TestGroupTxCancel: a caller whose context ends while its write waits in
// the queue gets ctx's error and its write never runs; one whose write has
// started gets the write's outcome.
func TestGroupTxCancel(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "g.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	g := &store.GroupTx{DB: db}
	started, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- g.Do(context.Background(), func(tx store.Execer) error {
			close(started)
			<-release // holds the group: what comes next waits in the queue
			_, err := tx.ExecContext(context.Background(), `INSERT INTO t (k) VALUES (1)`)
			return err
		})
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	ran := false
	queued := make(chan error, 1)
	go func() {
		queued <- g.Do(ctx, func(tx store.Execer) error {
			ran = true
			_, err := tx.ExecContext(context.Background(), `INSERT INTO t (k) VALUES (2)`)
			return err
		})
	}()
	time.Sleep(50 * time.Millisecond) // queued behind the first
	cancel()
	if err := <-queued; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled while queued: %v", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The started one, cancelled while it runs, waits for its outcome.
	ctx2, cancel2 := context.WithCancel(context.Background())
	err = g.Do(ctx2, func(tx store.Execer) error {
		cancel2()
		time.Sleep(20 * time.Millisecond)
		_, err := tx.ExecContext(context.Background(), `INSERT INTO t (k) VALUES (3)`)
		return err
	})
	if err != nil {
		t.Fatalf("cancelled while running: %v, want its outcome", err)
	}
	var keys []int
	rows, _ := db.Query(`SELECT k FROM t ORDER BY k`)
	for rows.Next() {
		var k int
		rows.Scan(&k)
		keys = append(keys, k)
	}
	rows.Close()
	if fmt.Sprint(keys) != "[1 3]" || ran {
		t.Fatalf("rows %v (cancelled write ran: %v), want [1 3]", keys, ran)
	}
}
