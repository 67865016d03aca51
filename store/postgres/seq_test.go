package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/postgres"
	"github.com/telehub/telehub/store/postgres/pgtest"
	"github.com/telehub/telehub/store/storetest"
)

// follow reads messages above last in seq order, as a hub following the
// table does, and returns the gaps it met: a seq seen while a lower one is
// not yet visible.
func follow(ctx context.Context, c *pgx.Conn, last *int64) (gaps []string, err error) {
	rows, err := c.Query(ctx, `SELECT seq FROM messages WHERE seq > $1 ORDER BY seq`, *last)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return gaps, err
		}
		if seq != *last+1 {
			gaps = append(gaps, fmt.Sprintf("at %d saw %d", *last, seq))
		}
		*last = seq
	}
	return gaps, rows.Err()
}

// TestSeq_DenseInCommitOrderAcrossHubs: four hubs commit into one database
// at once, in small batches, while a follower polls seq > last. The
// follower never sees a gap, and in the end every number 1..N is used once.
func TestSeq_DenseInCommitOrderAcrossHubs(t *testing.T) {
	url := pgtest.NewDB(t)
	ctx := context.Background()
	const hubs, each = 4, 600
	var stores []*postgres.Store
	for h := 0; h < hubs; h++ {
		s, err := postgres.Open(ctx, url, store.Options{MaxBatch: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	fc, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close(ctx)

	var writing atomic.Int32
	writing.Store(hubs)
	var wg sync.WaitGroup
	for h, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer writing.Add(-1)
			for i := 0; i < each; i += 20 {
				var part []devices.Message
				for j := i; j < i+20; j++ {
					part = append(part, storetest.Telemetry(fmt.Sprintf("hub%d-dev%d", h, j%5), int64(j), fmt.Sprintf(`{"j":%d}`, j)))
				}
				storetest.WriteAll(t, s, part)
			}
		}()
	}
	var last int64
	polls := 0
	deadline := time.Now().Add(2 * time.Minute)
	var gaps []string
	poll := func() {
		g, err := follow(ctx, fc, &last)
		if err != nil {
			t.Fatal(err)
		}
		gaps = append(gaps, g...)
		polls++
	}
	for writing.Load() > 0 && time.Now().Before(deadline) {
		poll()
	}
	wg.Wait()
	poll()
	if len(gaps) > 0 {
		t.Fatalf("the follower met %d gaps that filled later, first: %s", len(gaps), gaps[0])
	}
	if last != hubs*each {
		t.Fatalf("follower reached %d, want %d", last, hubs*each)
	}
	var n, maxSeq int64
	fc.QueryRow(ctx, `SELECT count(*), max(seq) FROM messages`).Scan(&n, &maxSeq)
	if n != hubs*each || maxSeq != hubs*each {
		t.Fatalf("%d rows up to seq %d, want %d dense", n, maxSeq, hubs*each)
	}
	t.Logf("%d polls while %d hubs wrote %d messages", polls, hubs, hubs*each)
}

// TestSeq_FollowerCatchesIdentityGaps is the control: numbers taken at
// insert (an identity column), committed out of order, show the follower a
// gap that fills later; follow reports it.
func TestSeq_FollowerCatchesIdentityGaps(t *testing.T) {
	url := pgtest.NewDB(t)
	ctx := context.Background()
	conn := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	a, b, f := conn(), conn(), conn()
	if _, err := a.Exec(ctx, `CREATE TABLE messages (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	txA, _ := a.Begin(ctx)
	txA.Exec(ctx, `INSERT INTO messages DEFAULT VALUES`) // takes 1
	txB, _ := b.Begin(ctx)
	txB.Exec(ctx, `INSERT INTO messages DEFAULT VALUES`) // takes 2
	txB.Commit(ctx)                                      // 2 visible, 1 not yet

	var last int64
	gaps, err := follow(ctx, f, &last)
	txA.Commit(ctx)
	if err != nil || len(gaps) != 1 || last != 2 {
		t.Fatalf("follower saw gaps %v at %d (%v); want the one at 0 -> 2", gaps, last, err)
	}
}
