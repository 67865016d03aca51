package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// BenchmarkWriter measures messages/second through the Writer: 1,000
// devices, small JSON payloads, producers flooding the queue so that batches
// reach MaxBatch, as under full load. Compare with BenchmarkRawInsert, run
// in the same invocation (go test -bench 'Writer|RawInsert' ./store).
func BenchmarkWriter(b *testing.B) {
	for _, batch := range []int{1000, store.DefaultMaxBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db := MustOpenDB(b)
			w := store.NewWriter(db)
			w.MaxBatch = batch
			var commits, rows int
			w.OnCommit = func(m []devices.Message) { commits++; rows += len(m) }
			if err := w.Open(); err != nil {
				b.Fatal(err)
			}
			msgs := benchMessages(b.N)
			var wg sync.WaitGroup
			wg.Add(b.N)
			done := func(*devices.Message, error) { wg.Done() }
			b.ResetTimer()
			start := time.Now()
			for i := range msgs {
				if err := w.Write(context.Background(), &devices.Pending{Message: msgs[i], Done: done}); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			w.Close(context.Background())
			b.ReportMetric(float64(b.N)/el.Seconds(), "rows/s")
			if commits > 0 {
				b.ReportMetric(float64(rows)/float64(commits), "rows/commit")
			}
		})
	}
}

// BenchmarkRawInsert is the baseline: the same schema and durability
// (WAL, synchronous=FULL), one prepared single-row INSERT per message in
// transactions of the given size, with no device bookkeeping.
func BenchmarkRawInsert(b *testing.B) {
	for _, batch := range []int{1000, store.DefaultMaxBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db := MustOpenDB(b)
			raw := rawDB(b, db.Path)
			raw.SetMaxOpenConns(1)
			if _, err := raw.Exec(`PRAGMA synchronous = FULL`); err != nil {
				b.Fatal(err)
			}
			for d := 1; d <= 1000; d++ {
				raw.Exec(`INSERT INTO devices (id, name, first_seen, last_seen) VALUES (?, ?, 0, 0)`, d, fmt.Sprint("dev-", d))
			}
			msgs := benchMessages(b.N)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < len(msgs); i += batch {
				tx, err := raw.Begin()
				if err != nil {
					b.Fatal(err)
				}
				stmt, err := tx.Prepare(`INSERT INTO messages (seq, device_id, ts, received, topic, kind, qos, flags, payload) VALUES (?,?,?,?,?,?,?,?,?)`)
				if err != nil {
					b.Fatal(err)
				}
				for j := i; j < min(i+batch, len(msgs)); j++ {
					m := &msgs[j]
					if _, err := stmt.Exec(j+1, j%1000+1, m.TS, m.Received, m.Topic, 1, 1, 0, m.Payload); err != nil {
						b.Fatal(err)
					}
				}
				stmt.Close()
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.ReportMetric(float64(b.N)/el.Seconds(), "rows/s")
		})
	}
}

func benchMessages(n int) []devices.Message {
	msgs := make([]devices.Message, n)
	for i := range msgs {
		msgs[i] = msg(fmt.Sprint("dev-", i%1000+1), i)
	}
	return msgs
}
