package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/sqlite"
)

func TestMessageService_ListMessages(t *testing.T) {
	db := MustOpenDB(t)
	w := MustOpenWriter(t, db)
	var in []devices.Message
	for i := 0; i < 30; i++ {
		m := msg([]string{"a", "b"}[i%2], i)
		m.TS = 1000 + int64(29-i) // device time runs backwards: ts order differs from seq order
		in = append(in, m)
	}
	writeAll(t, w, in)
	s := sqlite.NewMessageService(db)
	ctx := context.Background()

	t.Run("NewestFirstByTS", func(t *testing.T) {
		got, err := s.ListMessages(ctx, devices.MessageFilter{From: devices.MinTime, To: devices.MaxTime, Device: "a", Limit: 5, Desc: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 5 || got[0].TS != 1029 || got[0].Seq != 1 || got[4].TS != 1021 {
			t.Fatalf("got %d, first ts=%d seq=%d, last ts=%d; want 5 from ts 1029 (seq 1) to 1021", len(got), got[0].TS, got[0].Seq, got[4].TS)
		}
		for _, m := range got {
			if m.Device != "a" {
				t.Fatalf("device=%s, want a", m.Device)
			}
		}
	})
	t.Run("Range", func(t *testing.T) {
		got, _ := s.ListMessages(ctx, devices.MessageFilter{Device: "b", From: 1005, To: 1010, Limit: 100})
		if len(got) != 3 || got[0].TS != 1006 || got[2].TS != 1010 {
			t.Fatalf("got %v, want ts 1006, 1008, 1010", got)
		}
	})
	t.Run("Pages", func(t *testing.T) {
		for _, desc := range []bool{true, false} {
			var all []devices.Message
			f := devices.MessageFilter{From: devices.MinTime, To: devices.MaxTime, Device: "a", Limit: 4, Desc: desc}
			for {
				page, err := s.ListMessages(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, page...)
				if len(page) < f.Limit {
					break
				}
				last := page[len(page)-1]
				f.After = &devices.Position{TS: last.TS, Seq: last.Seq}
			}
			whole, _ := s.ListMessages(ctx, devices.MessageFilter{From: devices.MinTime, To: devices.MaxTime, Device: "a", Limit: 100, Desc: desc})
			if len(all) != 15 || len(whole) != 15 {
				t.Fatalf("desc=%v: pages gave %d, one query %d, want 15", desc, len(all), len(whole))
			}
			for i := range all {
				if all[i].Seq != whole[i].Seq {
					t.Fatalf("desc=%v: page order differs at %d", desc, i)
				}
			}
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		if _, err := s.ListMessages(ctx, devices.MessageFilter{From: devices.MinTime, To: devices.MaxTime, Device: "zzz", Limit: 1}); !errors.Is(err, devices.ErrNotFound) {
			t.Fatalf("err=%v, want ErrNotFound", err)
		}
		if _, err := s.FindDevice(ctx, "zzz"); !errors.Is(err, devices.ErrNotFound) {
			t.Fatalf("err=%v, want ErrNotFound", err)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		for _, f := range []devices.MessageFilter{{Limit: 0}, {Limit: -1}, {Limit: sqlite.MaxListLimit + 1}, {Limit: 1, From: 10, To: 5}} {
			if _, err := s.ListMessages(ctx, f); !errors.Is(err, devices.ErrInvalid) {
				t.Errorf("%+v: err=%v, want ErrInvalid", f, err)
			}
		}
	})
	t.Run("ListDevices", func(t *testing.T) {
		s := sqlite.NewMessageService(db)
		s.Summaries = w.Summaries()
		ds, err := s.ListDevices(ctx)
		if err != nil || len(ds) != 2 || ds[0].ID != "a" || ds[0].MessageCount != 15 || ds[0].Latest["temp"].Value == nil {
			t.Fatalf("ListDevices=%+v, %v", ds, err)
		}
	})
}

// TestMessageService_PagesWithTies: messages sharing a timestamp are paged
// through by seq, none skipped or repeated (devices may send the same ts).
func TestMessageService_PagesWithTies(t *testing.T) {
	db := MustOpenDB(t)
	w := MustOpenWriter(t, db)
	var in []devices.Message
	for i := 0; i < 23; i++ {
		m := msg("t", i)
		m.TS = int64(100 + i/5) // five messages per timestamp
		in = append(in, m)
	}
	writeAll(t, w, in)
	s := sqlite.NewMessageService(db)
	for _, desc := range []bool{true, false} {
		seen := map[devices.Seq]bool{}
		f := devices.MessageFilter{From: devices.MinTime, To: devices.MaxTime, Device: "t", Limit: 3, Desc: desc}
		for {
			page, err := s.ListMessages(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range page {
				if seen[m.Seq] {
					t.Fatalf("desc=%v: seq %d twice", desc, m.Seq)
				}
				seen[m.Seq] = true
			}
			if len(page) < f.Limit {
				break
			}
			last := page[len(page)-1]
			f.After = &devices.Position{TS: last.TS, Seq: last.Seq}
		}
		if len(seen) != 23 {
			t.Fatalf("desc=%v: paged %d of 23", desc, len(seen))
		}
	}
}

// TestQueryPlans guards the indexes: history and replay, for one device or
// all, must search an index in the requested order, never scan and sort.
func TestQueryPlans(t *testing.T) {
	db := MustOpenDB(t)
	raw := rawDB(t, db.Path)
	type query struct {
		name string
		q    string
		args []any
	}
	var queries []query
	for _, tt := range []struct {
		name string
		f    devices.MessageFilter
		dev  int64
	}{
		{"history newest", devices.MessageFilter{From: devices.MinTime, To: devices.MaxTime, Limit: 10, Desc: true}, 1},
		{"history range", devices.MessageFilter{From: 5, To: 9, Limit: 10}, 1},
		{"history next page", devices.MessageFilter{From: devices.MinTime, To: devices.MaxTime, Limit: 10, Desc: true, After: &devices.Position{TS: 7, Seq: 3}}, 1},
	} {
		q, args := sqlite.MessagesQuery(tt.f, tt.dev)
		queries = append(queries, query{tt.name, q, args})
	}
	for _, tt := range []struct {
		name string
		dev  int64
	}{{"replay all", 0}, {"replay one device, recent", 1}} {
		q, args := sqlite.ReplayQuery(tt.dev, 5, 100)
		queries = append(queries, query{tt.name, q, args})
	}
	queries = append(queries, query{"replay one device, far back: its seqs", sqlite.ReplayFarSeqs, []any{1, 5, 100}})
	for _, tt := range queries {
		q, args := tt.q, tt.args
		rows, err := raw.Query(`EXPLAIN QUERY PLAN `+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			rows.Scan(&id, &parent, &notused, &detail)
			plan += detail + "; "
		}
		rows.Close()
		t.Logf("%s: %s", tt.name, plan)
		if !strings.Contains(plan, "SEARCH m USING") && !strings.Contains(plan, "SEARCH messages USING COVERING INDEX") || strings.Contains(plan, "TEMP B-TREE") {
			t.Errorf("%s: plan %q, want an index search on messages with no sort", tt.name, plan)
		}
	}
}

// TestMessageService_Replay: both replay paths return exactly the messages
// in (after, upTo], across page boundaries, each once, in seq order. A
// device replayed from far back once came in ts order, so that a client
// resuming with "since = the last seq received" skipped and duplicated.
func TestMessageService_Replay(t *testing.T) {
	db := MustOpenDB(t)
	w := MustOpenWriter(t, db)
	var in []devices.Message
	for i := 0; i < 2*sqlite.ReplayScanLimit/100+2500; i++ { // several pages per device
		m := msg([]string{"a", "b", "c"}[i%3], i)
		m.TS = int64(i % 1000) // ts order differs from seq order, with ties
		in = append(in, m)
	}
	writeAll(t, w, in)
	s := sqlite.NewMessageService(db)
	ctx := context.Background()
	for _, tt := range []struct {
		name        string
		device      string
		after, upTo devices.Seq
	}{
		{"all", "", 10, devices.Seq(len(in) - 5)},
		{"one device recent", "b", 100, 3100},
		{"one device far back", "b", 0, sqlite.ReplayScanLimit + 1}, // wider than the scan limit: through the device index
		{"unknown device", "zzz", 0, 100},
		{"empty range", "a", 50, 50},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := map[devices.Seq]bool{}
			for i, m := range in {
				seq := devices.Seq(i + 1)
				if seq > tt.after && seq <= tt.upTo && (tt.device == "" || m.Device == tt.device) {
					want[seq] = true
				}
			}
			got := map[devices.Seq]bool{}
			var last devices.Seq
			err := s.Replay(ctx, tt.device, tt.after, tt.upTo, func(m *devices.Message) error {
				if m.Seq <= last {
					t.Fatalf("seq %d after %d: not in seq order", m.Seq, last)
				}
				last = m.Seq
				if !want[m.Seq] {
					t.Fatalf("seq %d (device %s) not in the range", m.Seq, m.Device)
				}
				got[m.Seq] = true
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("replayed %d, want %d", len(got), len(want))
			}
		})
	}
}

// TestMessageService_ByReceived: a receive-time window selects exactly the
// messages received in it, in arrival order, with keyset pages, whatever
// their device time.
func TestMessageService_ByReceived(t *testing.T) {
	db := MustOpenDB(t)
	w := MustOpenWriter(t, db)
	var in []devices.Message
	for i := 0; i < 3000; i++ { // received every 10 ms; ts scrambled, as with broken clocks
		dev := []string{"a", "b", "c"}[i%3]
		p := []byte(fmt.Sprintf(`{"i":%d}`, i))
		in = append(in, devices.Message{Device: dev, Topic: "devices/" + dev + "/telemetry", Kind: devices.KindTelemetry,
			TS: int64((i*7919)%3000) * 1000, Received: 1_000_000 + int64(i)*10, Payload: p})
	}
	writeAll(t, w, in)
	s := sqlite.NewMessageService(db)
	ctx := context.Background()
	from, to := int64(1_000_000+1000*10), int64(1_000_000+2000*10) // i in [1000, 2000]
	var got []devices.Message
	f := devices.MessageFilter{Device: "b", From: from, To: to, Limit: 100, Desc: true, ByReceived: true}
	for {
		page, err := s.ListMessages(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if len(page) < f.Limit {
			break
		}
		f.After = &devices.Position{Seq: page[len(page)-1].Seq}
	}
	var want []int64
	for i := 2000; i >= 1000; i-- {
		if i%3 == 1 {
			want = append(want, 1_000_000+int64(i)*10)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d messages, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Received != want[i] || got[i].Device != "b" || (i > 0 && got[i].Seq >= got[i-1].Seq) {
			t.Fatalf("message %d: %+v, want received %d in seq order", i, got[i], want[i])
		}
	}
}
