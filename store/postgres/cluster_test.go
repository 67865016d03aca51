package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/postgres"
	"github.com/telehub/telehub/store/postgres/pgtest"
	"github.com/telehub/telehub/store/storetest"
)

// hub is one store on a shared database with what its live feed carried.
type hub struct {
	*postgres.Store
	mu   sync.Mutex
	feed []devices.Message
}

func openHub(t *testing.T, url string) *hub {
	t.Helper()
	h := &hub{}
	s, err := postgres.Open(context.Background(), url, store.Options{MaxBatch: 16, OnCommit: func(b []devices.Message) {
		h.mu.Lock()
		h.feed = append(h.feed, b...)
		h.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	h.Store = s
	t.Cleanup(func() { s.Close() })
	return h
}

// TestCluster_EveryHubFeedsEveryMessage: three hubs write into one
// database at once; each hub's live feed carries every hub's messages,
// once, in sequence order, and each hub's device summaries count them all.
func TestCluster_EveryHubFeedsEveryMessage(t *testing.T) {
	url := pgtest.NewDB(t)
	hubs := []*hub{openHub(t, url), openHub(t, url), openHub(t, url)}
	const each = 300
	var wg sync.WaitGroup
	for i, h := range hubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var msgs []devices.Message
			for j := 0; j < each; j++ {
				msgs = append(msgs, storetest.Telemetry(fmt.Sprintf("hub%d-dev%d", i, j%3), int64(j), fmt.Sprintf(`{"j":%d}`, j)))
			}
			for k := 0; k < each; k += 30 {
				storetest.WriteAll(t, h, msgs[k:k+30])
			}
		}()
	}
	wg.Wait()
	total := len(hubs) * each
	for i, h := range hubs {
		var feed []devices.Message
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			h.mu.Lock()
			feed = append(feed[:0], h.feed...)
			h.mu.Unlock()
			if len(feed) >= total || time.Now().After(deadline) {
				break
			}
		}
		if len(feed) != total {
			t.Fatalf("hub %d: its feed carried %d messages, want %d", i, len(feed), total)
		}
		for k, m := range feed {
			if m.Seq != devices.Seq(k+1) {
				t.Fatalf("hub %d: feed message %d has seq %d: a gap, a repeat or out of order", i, k, m.Seq)
			}
		}
		list, _ := h.ListDevices(context.Background())
		if len(list) != 9 {
			t.Fatalf("hub %d knows %d devices, want 9", i, len(list))
		}
		for _, d := range list {
			if d.MessageCount != each/3 {
				t.Fatalf("hub %d: %s has %d messages, want %d", i, d.ID, d.MessageCount, each/3)
			}
		}
		if h.LastSeq() != devices.Seq(total) {
			t.Fatalf("hub %d: LastSeq %d, want %d", i, h.LastSeq(), total)
		}
	}
}

// TestCluster_LeaderHandsOver: one hub at a time holds the lock that makes
// it save summaries and run retention; when it stops, another takes over
// and saves what it has.
func TestCluster_LeaderHandsOver(t *testing.T) {
	url := pgtest.NewDB(t)
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	holders := func() int {
		var n int
		c.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1`, 0x5448554c).Scan(&n)
		return n
	}
	waitLeader := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); holders() != 1; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d hubs lead, want 1", what, holders())
			}
		}
	}
	a := openHub(t, url) // alone: it leads
	waitLeader("one hub")
	b := openHub(t, url)
	storetest.WriteAll(t, b, []devices.Message{storetest.Telemetry("x", 1, `{"v":1}`)})
	time.Sleep(1500 * time.Millisecond) // a tick of b's: b does not lead while a does
	if n := holders(); n != 1 {
		t.Fatalf("two hubs: %d lead, want 1", n)
	}
	a.Close()
	waitLeader("after the leader stopped")
	storetest.WriteAll(t, b, []devices.Message{storetest.Telemetry("x", 2, `{"v":2}`)})
	b.Close() // the new leader saves its summaries as it stops
	// The saved row, not a fold at the next start: b led when it stopped.
	var count int64
	if err := c.QueryRow(context.Background(), `SELECT message_count FROM devices WHERE name = 'x'`).Scan(&count); err != nil || count != 2 {
		t.Fatalf("saved summary of x after the hand-over: %d messages (%v), want 2", count, err)
	}
}
