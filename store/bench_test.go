package store_test

import (
	"context"
	"fmt"
	"slices"
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

// BenchmarkRollupFlush times writing the rollups of one message from each
// of 1,000 devices with 3 metrics (6,000 buckets, a minute's and an hour's
// for each), all at once (ms/flush) and in a round of steps between
// commits (ms/longest-step): the longest the write loop stalls for them.
//
//	go test -run '^$' -bench RollupFlush ./store
func BenchmarkRollupFlush(b *testing.B) {
	db := MustOpenDB(b)
	w := store.NewWriter(db)
	w.RollupInterval = time.Hour // flushed by hand only
	if err := w.Open(); err != nil {
		b.Fatal(err)
	}
	defer w.Close(context.Background())
	base := int64(1_764_460_800_000)
	for i := 0; i < b.N; i++ {
		var msgs []devices.Message
		for d := 0; d < 1000; d++ {
			p := fmt.Appendf(nil, `{"a":%d,"b":%d.5,"c":%d}`, d, d, i)
			ts := base + int64(i)*60_000
			_, values, flags := devices.DecodePayload(p, ts)
			msgs = append(msgs, devices.Message{Device: fmt.Sprint("dev-", d), Topic: "t", Kind: devices.KindTelemetry, TS: ts, Received: ts, Payload: p, Values: values, Flags: flags})
		}
		writeAll(b, w, msgs)
		if i%2 == 0 { // all at once: what shutdown and deletes do
			start := time.Now()
			if err := w.FlushRollups(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "ms/flush")
			continue
		}
		// In a round, a step between commits at a time: the steady state.
		var longest time.Duration
		steps := 0
		for more := true; more; steps++ {
			start := time.Now()
			var err error
			if more, err = w.RollupRoundStep(context.Background()); err != nil {
				b.Fatal(err)
			}
			longest = max(longest, time.Since(start))
		}
		b.ReportMetric(float64(longest.Microseconds())/1000, "ms/longest-step")
		b.ReportMetric(float64(steps), "steps/round")
	}
}

// BenchmarkSummaryRound times the commits of single messages while the
// device summaries of a 1,000-device fleet are being saved
// (devicesPerFlush of them ride along each commit), against commits with
// no summary to save: what the summaries add to a commit that devices wait
// for.
//
//	go test -run '^$' -bench SummaryRound -benchtime 5x ./store
func BenchmarkSummaryRound(b *testing.B) {
	db := MustOpenDB(b)
	w := store.NewWriter(db)
	w.FlushInterval, w.RollupInterval = 50*time.Millisecond, time.Hour
	var mu sync.Mutex
	var durs []time.Duration
	w.Observe = func(rows int, d time.Duration) {
		mu.Lock()
		durs = append(durs, d)
		mu.Unlock()
	}
	if err := w.Open(); err != nil {
		b.Fatal(err)
	}
	defer w.Close(context.Background())
	one := func(d, n int) devices.Message {
		p := fmt.Appendf(nil, `{"a":%d,"b":%d.5,"c":%d}`, n, d, n)
		_, values, flags := devices.DecodePayload(p, 1)
		return devices.Message{Device: fmt.Sprint("dev-", d), Topic: "t", Kind: devices.KindTelemetry, TS: int64(n), Received: int64(n), Payload: p, Values: values, Flags: flags}
	}
	stats := func() (p50, longest time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(durs)
		if len(durs) == 0 {
			return 0, 0
		}
		p50, longest = durs[len(durs)/2], durs[len(durs)-1]
		durs = durs[:0]
		return p50, longest
	}
	for i := 0; i < b.N; i++ {
		var all []devices.Message
		for d := 0; d < 1000; d++ {
			all = append(all, one(d, i))
		}
		writeAll(b, w, all) // every device dirty
		stats()
		for n := 0; n < 200; n++ { // single messages while the round goes
			writeAll(b, w, []devices.Message{one(0, n)})
		}
		p50, longest := stats()
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(longest.Microseconds())/1000, "longest-ms")
	}
}

// BenchmarkRollupRoundCommits times the commits of single messages while a
// rollup round of a 1,000-device fleet (3 metrics each: 6,000 buckets)
// rides along them, 256 buckets a commit.
//
//	go test -run '^$' -bench RollupRoundCommits -benchtime 5x ./store
func BenchmarkRollupRoundCommits(b *testing.B) {
	db := MustOpenDB(b)
	w := store.NewWriter(db)
	w.FlushInterval, w.RollupInterval = 20*time.Millisecond, 20*time.Millisecond
	var mu sync.Mutex
	var durs []time.Duration
	w.Observe = func(rows int, d time.Duration) {
		mu.Lock()
		durs = append(durs, d)
		mu.Unlock()
	}
	if err := w.Open(); err != nil {
		b.Fatal(err)
	}
	defer w.Close(context.Background())
	base := int64(1_764_460_800_000)
	for i := 0; i < b.N; i++ {
		var all []devices.Message
		for d := 0; d < 1000; d++ {
			ts := base + int64(i)*60_000
			p := fmt.Appendf(nil, `{"a":%d,"b":%d.5,"c":%d}`, d, d, i)
			_, values, flags := devices.DecodePayload(p, ts)
			all = append(all, devices.Message{Device: fmt.Sprint("dev-", d), Topic: "t", Kind: devices.KindTelemetry, TS: ts, Received: ts, Payload: p, Values: values, Flags: flags})
		}
		writeAll(b, w, all)
		mu.Lock()
		durs = durs[:0]
		mu.Unlock()
		for n := 0; n < 300; n++ {
			writeAll(b, w, all[n:n+1])
		}
		mu.Lock()
		slices.Sort(durs)
		b.ReportMetric(float64(durs[len(durs)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(durs[len(durs)-1].Microseconds())/1000, "longest-ms")
		mu.Unlock()
	}
}
