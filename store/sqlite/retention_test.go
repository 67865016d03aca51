package sqlite_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

func openWriter(t *testing.T, db *sqlite.DB, configure func(*sqlite.Writer)) *sqlite.Writer {
	t.Helper()
	w := sqlite.NewWriter(db)
	configure(w)
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	return w
}

func reading(device string, ts int64, payload string) devices.Message {
	p := []byte(payload)
	_, values, flags := devices.DecodePayload(p, ts)
	return devices.Message{Device: device, Topic: "devices/" + device + "/telemetry", Kind: devices.KindTelemetry,
		TS: ts, Received: ts, Flags: flags, Payload: p, Values: values}
}

// TestWriter_Retention: messages older than the retention (in whole hours)
// go with their rollups; device overrides win; counts follow; a second pass
// finds nothing to do.
func TestWriter_Retention(t *testing.T) {
	db := MustOpenDB(t)
	w := openWriter(t, db, func(w *sqlite.Writer) { w.Retention.Hub = 72 * time.Hour })
	ctx := context.Background()
	now := time.Now()
	var in []devices.Message
	for _, dev := range []string{"a", "keep", "short"} {
		for h := 0; h < 240; h++ { // one reading an hour for ten days
			in = append(in, reading(dev, now.Add(-time.Duration(h)*time.Hour).UnixMilli(), fmt.Sprintf(`{"v":%d}`, h)))
		}
	}
	writeAll(t, w, in)
	if err := w.SetRetention(ctx, "keep", 0); err != nil {
		t.Fatal(err)
	}
	if err := w.SetRetention(ctx, "short", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	res, err := w.RunRetention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Hour.Milliseconds()
	cutoff := func(keep time.Duration) int64 { return (now.UnixMilli() - keep.Milliseconds()) / hour * hour }
	want := map[string]int64{}
	for _, m := range in {
		switch {
		case m.Device == "a" && m.TS >= cutoff(72*time.Hour), m.Device == "keep", m.Device == "short" && m.TS >= cutoff(24*time.Hour):
			want[m.Device]++
		}
	}
	if res.Deleted != 720-want["a"]-want["keep"]-want["short"] || res.Devices != 2 {
		t.Fatalf("pass: %+v; want %d deleted from 2 devices", res, 720-want["a"]-want["keep"]-want["short"])
	}
	t.Logf("retention pass: %d messages in %v, longest step %v", res.Deleted, res.Took, res.LongestStep)
	raw := storetest.RawDB(t, db.Path)
	for dev, n := range want {
		var stored int64
		raw.QueryRow(`SELECT count(*) FROM messages m JOIN devices d ON d.id = m.device_id WHERE d.name = ?`, dev).Scan(&stored)
		d, _ := w.Device(dev)
		if stored != n || d.MessageCount != n {
			t.Errorf("%s: %d stored, count %d; want %d", dev, stored, d.MessageCount, n)
		}
	}
	// Charts of the deleted hours are empty too (rollups went with them).
	s := sqlite.NewMessageService(db)
	s.Summaries = w.Summaries()
	series, err := s.Series(ctx, devices.SeriesQuery{Device: "a", Metrics: []string{"v"}, From: now.Add(-240 * time.Hour).UnixMilli(), To: now.UnixMilli(), Interval: hour, Agg: devices.AggCount, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var readings float64
	for _, p := range series.Points["v"] {
		if p.TS < cutoff(72*time.Hour) {
			t.Fatalf("a has a rollup point at %d, before the cutoff %d", p.TS, cutoff(72*time.Hour))
		}
		readings += p.V
	}
	if int64(readings) != want["a"] {
		t.Fatalf("hourly counts of a add up to %v, want %d", readings, want["a"])
	}
	if res, _ := w.RunRetention(ctx); res.Deleted != 0 {
		t.Fatalf("second pass deleted %d", res.Deleted)
	}
	if d, own, _ := w.RetentionOf(ctx, "short"); d != 24*time.Hour || !own {
		t.Fatalf("short: %v own=%v", d, own)
	}
	// Overrides survive a restart.
	w.Close(ctx)
	w2 := openWriter(t, db, func(w *sqlite.Writer) { w.Retention.Hub = 72 * time.Hour })
	if d, own, _ := w2.RetentionOf(ctx, "keep"); d != 0 || !own {
		t.Fatalf("keep after restart: %v own=%v", d, own)
	}
}

// TestWriter_MaxDBSize: over the size cap, the oldest messages go until the
// database uses less than 90% of it; device counts stay exact.
func TestWriter_MaxDBSize(t *testing.T) {
	db := MustOpenDB(t)
	const max = 4 << 20
	w := openWriter(t, db, func(w *sqlite.Writer) { w.MaxDBSize = max })
	pad := strings.Repeat("x", 1000)
	var in []devices.Message
	for i := 0; i < 12000; i++ { // about 12 MB
		in = append(in, reading(fmt.Sprintf("d%d", i%7), int64(i)*1000, fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, pad)))
	}
	writeAll(t, w, in)
	res, err := w.RunRetention(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	raw := storetest.RawDB(t, db.Path)
	var pages, free, size, rows, minSeq int64
	raw.QueryRow(`PRAGMA page_count`).Scan(&pages)
	raw.QueryRow(`PRAGMA freelist_count`).Scan(&free)
	raw.QueryRow(`PRAGMA page_size`).Scan(&size)
	raw.QueryRow(`SELECT count(*), min(seq) FROM messages`).Scan(&rows, &minSeq)
	used := (pages - free) * size
	if used > max*9/10 || res.BySize == 0 || rows != 12000-res.BySize || minSeq != res.BySize+1 {
		t.Fatalf("used %d of %d, %d rows from seq %d; pass %+v", used, max, rows, minSeq, res)
	}
	var counted int64
	for _, d := range w.Devices() {
		counted += d.MessageCount
	}
	if counted != rows {
		t.Fatalf("device counts add up to %d, %d rows stored", counted, rows)
	}
	t.Logf("size pass: %d messages deleted in %v, longest step %v", res.BySize, res.Took, res.LongestStep)
}
