package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/storetest"
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

// BenchmarkRawInsert is the baseline: the same schema and durability, one
// prepared single-row INSERT per message in transactions of the given size,
// with no device bookkeeping (storetest.RawInsertRate).
func BenchmarkRawInsert(b *testing.B) {
	for _, batch := range []int{1000, store.DefaultMaxBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			b.ReportMetric(storetest.RawInsertRate(b, b.N, batch), "rows/s")
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
