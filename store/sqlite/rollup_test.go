package sqlite_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

// rollupsCaughtUp waits until the rollups hold every committed message.
func rollupsCaughtUp(t *testing.T, db *sqlite.DB, w *sqlite.Writer) {
	t.Helper()
	raw := storetest.RawDB(t, db.Path)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var seq int64
		raw.QueryRow(`SELECT value FROM meta WHERE key = 'rollup_seq'`).Scan(&seq)
		if devices.Seq(seq) >= w.LastSeq() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollups at seq %d, writer at %d", seq, w.LastSeq())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sameSeries compares a rollup answer with the raw one for every agg.
func sameSeries(t *testing.T, s *sqlite.MessageService, q devices.SeriesQuery) {
	t.Helper()
	for _, agg := range devices.Aggs {
		q.Agg = agg
		got, err := s.Series(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		want, err := sqlite.SeriesRaw(s, context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range q.Metrics {
			g, w := got.Points[m], want.Points[m]
			if len(g) != len(w) {
				t.Fatalf("%s %s interval %d: %d points from rollups, %d raw", m, agg, q.Interval, len(g), len(w))
			}
			for i := range g {
				if g[i].TS != w[i].TS || math.Abs(g[i].V-w[i].V) > 1e-9*math.Max(1, math.Abs(w[i].V)) {
					t.Fatalf("%s %s interval %d point %d: rollups %+v, raw %+v", m, agg, q.Interval, i, g[i], w[i])
				}
			}
		}
	}
}

func TestRollups(t *testing.T) {
	db := MustOpenDB(t)
	w := sqlite.NewWriter(db)
	w.FlushInterval = 20 * time.Millisecond
	w.RollupInterval = 20 * time.Millisecond
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close(context.Background()) }()
	s := sqlite.NewMessageService(db)
	rng := rand.New(rand.NewPCG(3, 4))
	const hours = int64(3)
	base := int64(1_764_460_800_000) // on an hour boundary
	gen := func(n int) []devices.Message {
		var in []devices.Message
		for i := 0; i < n; i++ {
			ts := base + rng.Int64N(hours*3_600_000) // out of order on purpose
			payload := fmt.Appendf(nil, `{"temp":%.3f,"hum":%d,"ts":%d}`, rng.NormFloat64()*5+20, rng.IntN(100), ts)
			t2, values, flags := devices.DecodePayload(payload, ts)
			in = append(in, devices.Message{Device: fmt.Sprint("r", i%3), Topic: "t", Kind: devices.KindTelemetry,
				TS: t2, Received: ts, Flags: flags, Payload: payload, Values: values})
		}
		return in
	}
	writeAll(t, w, gen(6000))
	rollupsCaughtUp(t, db, w)
	q := devices.SeriesQuery{Device: "r1", Metrics: []string{"temp", "hum"}, From: base, To: base + hours*3_600_000 - 1, Limit: 100000}
	for _, iv := range []int64{60_000, 300_000, 3_600_000, 7_200_000} {
		q.Interval = iv
		sameSeries(t, s, q)
	}

	t.Run("TailAboveWatermark", func(t *testing.T) {
		// Messages the rollups do not hold yet still count: here the
		// builder never runs, so every message is above the watermark.
		db2 := MustOpenDB(t)
		w2 := sqlite.NewWriter(db2)
		w2.FlushInterval, w2.RollupInterval = time.Hour, time.Hour
		if err := w2.Open(); err != nil {
			t.Fatal(err)
		}
		defer w2.Close(context.Background())
		writeAll(t, w2, gen(2000))
		for _, iv := range []int64{60_000, 3_600_000} {
			q.Interval = iv
			sameSeries(t, sqlite.NewMessageService(db2), q)
		}
	})

	t.Run("RebuiltFromScratch", func(t *testing.T) {
		// As if every delta was lost: no rollups, watermark 0. A new
		// writer derives them again from the messages.
		rollupsCaughtUp(t, db, w)
		raw := storetest.RawDB(t, db.Path)
		want, _ := s.Series(context.Background(), devices.SeriesQuery{Device: "r2", Metrics: []string{"temp"}, From: q.From, To: q.To, Interval: 3_600_000, Agg: devices.AggSum, Limit: 100})
		w.Close(context.Background())
		if _, err := raw.Exec(`DELETE FROM rollups`); err != nil {
			t.Fatal(err)
		}
		raw.Exec(`UPDATE meta SET value = 0 WHERE key = 'rollup_seq'`)
		w = sqlite.NewWriter(db)
		w.FlushInterval, w.RollupInterval = 20*time.Millisecond, 20*time.Millisecond
		if err := w.Open(); err != nil {
			t.Fatal(err)
		}
		rollupsCaughtUp(t, db, w)
		var n int
		raw.QueryRow(`SELECT count(*) FROM rollups`).Scan(&n)
		got, _ := s.Series(context.Background(), devices.SeriesQuery{Device: "r2", Metrics: []string{"temp"}, From: q.From, To: q.To, Interval: 3_600_000, Agg: devices.AggSum, Limit: 100})
		g, wp := got.Points["temp"], want.Points["temp"]
		if n == 0 || len(g) != len(wp) {
			t.Fatalf("rebuilt %d rollup rows; series %v, want %v", n, got.Points, want.Points)
		}
		for i := range g { // sums in another order differ in the last bits
			if g[i].TS != wp[i].TS || math.Abs(g[i].V-wp[i].V) > 1e-9*math.Abs(wp[i].V) {
				t.Fatalf("point %d: %+v, want %+v", i, g[i], wp[i])
			}
		}
	})

	t.Run("AfterRangeDelete", func(t *testing.T) {
		rollupsCaughtUp(t, db, w)
		if _, err := w.DeleteMessages(context.Background(), "r1", base+1_800_000, base+5_400_000); err != nil {
			t.Fatal(err)
		}
		for _, iv := range []int64{60_000, 3_600_000} {
			q.Interval = iv
			sameSeries(t, s, q)
		}
	})
}

// TestRollups_ExtremeValues: two readings of 1e308 then two of -1e308 in one
// bucket once made its sum Inf + -Inf = NaN, stored as NULL, so every later
// rollup flush failed on the NOT NULL constraint, also after a restart, and
// deleting another device's messages answered 500. Aggregates stay finite,
// and rollups keep reaching the database.
func TestRollups_ExtremeValues(t *testing.T) {
	db := MustOpenDB(t)
	w := sqlite.NewWriter(db)
	w.RollupInterval = 20 * time.Millisecond
	w.FlushInterval = 20 * time.Millisecond
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close(context.Background()) }()
	base := int64(1_764_460_800_000)
	mk := func(device string, v string, i int64) devices.Message {
		payload := []byte(`{"v":` + v + `}`)
		ts, values, flags := devices.DecodePayload(payload, base+i)
		return devices.Message{Device: device, Topic: "t", Kind: devices.KindTelemetry, TS: ts, Received: base + i, QoS: 1, Flags: flags, Payload: payload, Values: values}
	}
	// Two flushes: +Inf saved by the first, -Inf added by the second's upsert.
	writeAll(t, w, []devices.Message{mk("huge", "1e308", 0), mk("huge", "1e308", 1)})
	rollupsCaughtUp(t, db, w)
	writeAll(t, w, []devices.Message{mk("huge", "-1e308", 2), mk("huge", "-1e308", 3)})
	rollupsCaughtUp(t, db, w)
	writeAll(t, w, []devices.Message{mk("other", "1", 10), mk("other", "2", 11)})
	rollupsCaughtUp(t, db, w)
	if _, err := w.DeleteMessages(context.Background(), "other", devices.MinTime, base+10); err != nil {
		t.Fatalf("deleting another device's messages: %v", err)
	}
	s := sqlite.NewMessageService(db)
	for _, interval := range []int64{60_000, 1000} { // from rollups, and raw
		got, err := s.Series(context.Background(), devices.SeriesQuery{Device: "huge", Metrics: []string{"v"}, From: base, To: base + 59_999, Interval: interval, Agg: devices.AggSum, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range got.Points["v"] {
			if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
				t.Fatalf("interval %d: sum %v, want a finite value", interval, p.V)
			}
		}
	}
}

// TestRollups_BadBucketIsolated: a bucket that cannot be written (here a
// trigger refuses one device's rows) is left out and counted; every other
// bucket and the watermark still reach the database.
func TestRollups_BadBucketIsolated(t *testing.T) {
	db := MustOpenDB(t)
	w := sqlite.NewWriter(db)
	w.RollupInterval = 20 * time.Millisecond
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close(context.Background()) }()
	writeAll(t, w, []devices.Message{msg("good", 1), msg("bad", 2)})
	rollupsCaughtUp(t, db, w)
	raw := rawDB(t, db.Path)
	if _, err := raw.Exec(`CREATE TRIGGER refuse_bad BEFORE INSERT ON rollups WHEN NEW.device_id = (SELECT id FROM devices WHERE name = 'bad') BEGIN SELECT RAISE(ABORT, 'bad bucket'); END`); err != nil {
		t.Fatal(err)
	}
	writeAll(t, w, []devices.Message{msg("good", 3), msg("bad", 4), msg("bad", 100_000)}) // a new bucket for "bad"
	rollupsCaughtUp(t, db, w)
	if n := w.RollupBucketsDropped(); n == 0 {
		t.Fatalf("RollupBucketsDropped=%d, want some", n)
	}
	var count int64
	raw.QueryRow(`SELECT sum(count) FROM rollups r JOIN devices d ON d.id = r.device_id WHERE d.name = 'good' AND res = 60000`).Scan(&count)
	if count != 4 { // two readings (n, temp) in each of two messages
		t.Fatalf("good device's minute rollups count %d readings, want 4", count)
	}
}

// TestWriter_DeleteDeviceAtomic: deleting a device once ran its three
// statements outside a transaction, so a failure on the last left the
// device without its rollups and events. It is all or nothing.
func TestWriter_DeleteDeviceAtomic(t *testing.T) {
	db := MustOpenDB(t)
	w := sqlite.NewWriter(db)
	w.RollupInterval = 20 * time.Millisecond
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close(context.Background()) }()
	writeAll(t, w, []devices.Message{msg("keep", 1), msg("keep", 2)})
	rollupsCaughtUp(t, db, w)
	raw := rawDB(t, db.Path)
	if _, err := raw.Exec(`CREATE TRIGGER refuse_delete BEFORE DELETE ON devices BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := w.DeleteDevice(context.Background(), "keep"); err == nil {
		t.Fatal("DeleteDevice succeeded past the trigger")
	}
	var n int
	raw.QueryRow(`SELECT count(*) FROM rollups`).Scan(&n)
	if n == 0 {
		t.Fatal("the failed delete removed the device's rollups")
	}
}

// TestRollups_Rounds: rollups are written a step at a time between
// commits; a series read in the middle of a round, and after a crash in
// the middle of one (the files copied as they are, then opened again), is
// exactly the raw computation: no reading counted twice or missed.
func TestRollups_Rounds(t *testing.T) {
	dir := t.TempDir()
	db := MustOpenDBPath(t, filepath.Join(dir, "telehub.db"))
	w := sqlite.NewWriter(db)
	w.FlushInterval, w.RollupInterval = time.Hour, time.Hour // rounds only by hand
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close(context.Background()) }()
	base := int64(1_764_460_800_000)
	gen := func(round int) []devices.Message {
		var in []devices.Message
		for d := 0; d < 600; d++ { // 600 devices x 2 metrics x 2 resolutions: several steps a round
			for i := 0; i < 3; i++ {
				ts := base + int64(round)*90_000 + int64(i)*20_000
				p := fmt.Appendf(nil, `{"a":%d,"b":%d.25,"ts":%d}`, d+i, round, ts)
				_, values, flags := devices.DecodePayload(p, ts)
				in = append(in, devices.Message{Device: fmt.Sprint("d", d), Topic: "t", Kind: devices.KindTelemetry, TS: ts, Received: ts, Payload: p, Values: values, Flags: flags})
			}
		}
		return in
	}
	s := sqlite.NewMessageService(db)
	check := func(s *sqlite.MessageService, when string) {
		t.Helper()
		for _, dev := range []string{"d0", "d57", "d599"} {
			for _, iv := range []int64{60_000, 3_600_000} {
				q := devices.SeriesQuery{Device: dev, Metrics: []string{"a", "b"}, From: base, To: base + 2*3_600_000 - 1, Interval: iv, Limit: 1000}
				t.Run(when, func(t *testing.T) { sameSeries(t, s, q) })
			}
		}
	}
	writeAll(t, w, gen(0))
	for more, err := w.RollupRoundStep(context.Background()); more || err != nil; more, err = w.RollupRoundStep(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
	}
	writeAll(t, w, gen(1)) // the same buckets again, and new ones
	if more, err := w.RollupRoundStep(context.Background()); err != nil || !more {
		t.Fatalf("first step of the second round: more=%v err=%v, want a round under way", more, err)
	}
	writeAll(t, w, gen(2)) // more readings while the round is under way (its commits carry steps too)
	if more, err := w.RollupRoundStep(context.Background()); err != nil || !more {
		t.Fatalf("a later step: more=%v err=%v, want the round still under way", more, err)
	}
	check(s, "mid-round")

	// A crash now: the files as they are, opened by a new writer.
	crashed := filepath.Join(t.TempDir(), "telehub.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(db.Path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crashed+suffix, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db2 := MustOpenDBPath(t, crashed)
	w2 := sqlite.NewWriter(db2)
	w2.FlushInterval, w2.RollupInterval = 20*time.Millisecond, 20*time.Millisecond
	if err := w2.Open(); err != nil {
		t.Fatal(err)
	}
	defer func() { w2.Close(context.Background()) }()
	rollupsCaughtUp(t, db2, w2)
	check(sqlite.NewMessageService(db2), "after a crash mid-round")
}
