package sqlite_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/sqlite"
)

// History benchmarks run on a seeded database of 10 million messages: 1,000
// devices over 30 days, one of them ("hot") publishing once a second
// (2,592,000 messages), the other 999 sharing the rest evenly. Seeding takes
// a few minutes, so it runs only when TELEHUB_BENCH_DB names the file to use
// (created on first use, reused after):
//
//	TELEHUB_BENCH_DB=/tmp/telehub-10m.db go test -run '^$' -bench History -benchtime 20x ./store/sqlite
const (
	seedDays    = 30
	seedDevices = 1000
	seedTotal   = 10_000_000
	seedEnd     = int64(1_764_460_800_000) // 2025-11-30T00:00:00Z, Unix ms
)

func seededDB(b *testing.B) (*sqlite.DB, *sqlite.Writer) {
	b.Helper()
	path := os.Getenv("TELEHUB_BENCH_DB")
	if path == "" {
		b.Skip("set TELEHUB_BENCH_DB to a file path to seed (or reuse) the 10-million-message database")
	}
	_, statErr := os.Stat(path)
	db := MustOpenDBPath(b, path)
	w := sqlite.NewWriter(db)
	if err := w.Open(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close(context.Background()) })
	if statErr == nil && w.LastSeq() >= seedTotal {
		waitRollups(b, db, w)
		return db, w
	}
	b.Logf("seeding %d messages into %s", seedTotal, path)
	start := time.Now()
	span := int64(seedDays) * 86_400_000
	hot := span / 1000
	perCold := (seedTotal - hot) / (seedDevices - 1)
	coldStep := span / perCold
	var wg sync.WaitGroup
	done := func(*devices.Message, error) { wg.Done() }
	put := func(dev string, ts int64, i int64) {
		payload := fmt.Appendf(nil, `{"temp":%.2f,"hum":%d,"ts":%d}`, 20+float64(i%100)/10, 40+i%20, ts)
		_, values, flags := devices.DecodePayload(payload, ts)
		wg.Add(1)
		w.Write(context.Background(), &devices.Pending{Done: done, Message: devices.Message{
			Device: dev, Topic: "devices/" + dev + "/telemetry", Kind: devices.KindTelemetry,
			TS: ts, Received: ts, QoS: 1, Flags: flags, Payload: payload, Values: values}})
	}
	// Interleave in time order, as the devices would have published.
	var i int64
	for t := seedEnd - span; t < seedEnd; t += coldStep {
		for k := int64(0); k < coldStep && t+k < seedEnd; k += 1000 {
			put("hot", t+k, i)
			i++
		}
		for d := 1; d < seedDevices; d++ {
			put(fmt.Sprintf("dev-%03d", d), t+int64(d), i)
			i++
		}
	}
	wg.Wait()
	b.Logf("seeded %d messages in %v", i, time.Since(start))
	waitRollups(b, db, w)
	return db, w
}

// waitRollups waits until the writer has rolled up every message.
func waitRollups(b *testing.B, db *sqlite.DB, w *sqlite.Writer) {
	start := time.Now()
	for {
		var seq int64
		db.ReadDB().QueryRow(`SELECT value FROM meta WHERE key = 'rollup_seq'`).Scan(&seq)
		if devices.Seq(seq) >= w.LastSeq() {
			b.Logf("rollups complete after %v", time.Since(start))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func BenchmarkHistory(b *testing.B) {
	db, w := seededDB(b)
	s := sqlite.NewMessageService(db)
	s.Summaries = w.Summaries()
	ctx := context.Background()
	day := int64(86_400_000)
	b.Run("last100", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if msgs, err := s.ListMessages(ctx, devices.MessageFilter{From: devices.MinTime, To: devices.MaxTime, Device: "hot", Limit: 100, Desc: true}); err != nil || len(msgs) != 100 {
				b.Fatal(err, len(msgs))
			}
		}
	})
	b.Run("series-cold-7d-1m", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := s.Series(ctx, devices.SeriesQuery{Device: "dev-500", Metrics: []string{"temp"}, From: seedEnd - 7*day, To: seedEnd, Interval: 60_000, Agg: devices.AggAvg, Limit: 100000}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("series-hot-7d-1m", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := s.Series(ctx, devices.SeriesQuery{Device: "hot", Metrics: []string{"temp"}, From: seedEnd - 7*day, To: seedEnd, Interval: 60_000, Agg: devices.AggAvg, Limit: 100000}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// 1 h is what max_points=1000 picks for 30 days (720 points).
	b.Run("series-hot-30d-1000pts", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := s.Series(ctx, devices.SeriesQuery{Device: "hot", Metrics: []string{"temp"}, From: seedEnd - 30*day, To: seedEnd, Interval: 3_600_000, Agg: devices.AggAvg, Limit: 1000}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("latest-all-devices", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if list, err := s.ListDevices(ctx); err != nil || len(list) != seedDevices {
				b.Fatal(err, len(list))
			}
		}
	})
	b.Run("export-1M-ndjson", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			bw := bufio.NewWriter(io.Discard)
			n := 0
			start := time.Now()
			err := s.Replay(ctx, "", 0, 1_000_000, func(m *devices.Message) error {
				bw.Write(append(m.AppendJSON(nil), '\n'))
				n++
				return nil
			})
			if err != nil || n != 1_000_000 {
				b.Fatal(err, n)
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "rows/s")
		}
	})
}
