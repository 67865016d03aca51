package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

// BenchmarkWriter measures messages/second through the Writer: 1,000
// devices, small JSON payloads, producers flooding the queue so that batches
// reach MaxBatch, as under full load. Compare with BenchmarkRawInsert, run
// in the same invocation (go test -bench 'Writer|RawInsert' ./store/sqlite).
func BenchmarkWriter(b *testing.B) {
	for _, batch := range []int{1000, store.DefaultMaxBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db := MustOpenDB(b)
			w := sqlite.NewWriter(db)
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
//	go test -run '^$' -bench RollupFlush ./store/sqlite
func BenchmarkRollupFlush(b *testing.B) {
	db := MustOpenDB(b)
	w := sqlite.NewWriter(db)
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

// commitTimes records the duration of every commit of w that stores
// messages; take returns their median and longest since the last take.
type commitTimes struct {
	mu   sync.Mutex
	durs []time.Duration
}

func observeCommits(w *sqlite.Writer) *commitTimes {
	c := &commitTimes{}
	w.Observe = func(rows int, d time.Duration) {
		c.mu.Lock()
		c.durs = append(c.durs, d)
		c.mu.Unlock()
	}
	return c
}

func (c *commitTimes) take() (p50, longest time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() { c.durs = c.durs[:0] }()
	if len(c.durs) == 0 {
		return 0, 0
	}
	slices.Sort(c.durs)
	return c.durs[len(c.durs)/2], c.durs[len(c.durs)-1]
}

// fleetMessage is device d's n-th message of three metrics, at ts.
func fleetMessage(d, n int, ts int64) devices.Message {
	p := fmt.Appendf(nil, `{"a":%d,"b":%d.5,"c":%d}`, n, d, n)
	_, values, flags := devices.DecodePayload(p, ts)
	return devices.Message{Device: fmt.Sprint("dev-", d), Topic: "t", Kind: devices.KindTelemetry, TS: ts, Received: ts, Payload: p, Values: values, Flags: flags}
}

// commitsDuring writes one message from each of 1,000 devices, then 300
// single messages, and reports the median and longest commit among those:
// what a round started by the first batch adds to the commits that follow.
func commitsDuring(b *testing.B, w *sqlite.Writer, times *commitTimes) {
	base := int64(1_764_460_800_000)
	for i := 0; i < b.N; i++ {
		var all []devices.Message
		for d := 0; d < 1000; d++ {
			all = append(all, fleetMessage(d, i, base+int64(i)*60_000))
		}
		writeAll(b, w, all)
		times.take()
		for n := 0; n < 300; n++ {
			writeAll(b, w, all[n:n+1])
		}
		p50, longest := times.take()
		b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(longest.Microseconds())/1000, "longest-ms")
	}
}

// BenchmarkSummaryRound times the commits of single messages while the
// device summaries of a 1,000-device fleet are being saved
// (devicesPerFlush of them ride along each commit).
//
//	go test -run '^$' -bench SummaryRound -benchtime 5x ./store/sqlite
func BenchmarkSummaryRound(b *testing.B) {
	w := sqlite.NewWriter(MustOpenDB(b))
	w.FlushInterval, w.RollupInterval = 50*time.Millisecond, time.Hour
	times := observeCommits(w)
	if err := w.Open(); err != nil {
		b.Fatal(err)
	}
	defer w.Close(context.Background())
	commitsDuring(b, w, times)
}

// BenchmarkRollupRoundCommits times the commits of single messages while a
// rollup round of a 1,000-device fleet (3 metrics each: 6,000 buckets)
// rides along them, rollupsPerStep buckets a commit.
//
//	go test -run '^$' -bench RollupRoundCommits -benchtime 5x ./store/sqlite
func BenchmarkRollupRoundCommits(b *testing.B) {
	w := sqlite.NewWriter(MustOpenDB(b))
	w.FlushInterval, w.RollupInterval = 20*time.Millisecond, 20*time.Millisecond
	times := observeCommits(w)
	if err := w.Open(); err != nil {
		b.Fatal(err)
	}
	defer w.Close(context.Background())
	commitsDuring(b, w, times)
}

// BenchmarkCommandChanges measures the store's side of a command's life
// after its creation: the three status changes (sent, delivered, replied)
// of many commands, submitted without waiting as the device lanes do, so
// that they share commits riding on the writer's (no messages here). It
// reports the writer's time per command (ns/op); at 2,000 commands a second each
// microsecond here is 0.2 % of the one writer's time.
func BenchmarkCommandChanges(b *testing.B) {
	s, err := sqlite.Open(filepath.Join(b.TempDir(), "t.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	t0 := time.Now().UnixMilli()
	ids := make([]int64, b.N)
	var wg sync.WaitGroup
	for i := range ids { // created beforehand, 64 at a time
		if i%64 == 0 {
			wg.Wait()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.CreateCommand(ctx, devices.Command{Device: fmt.Sprintf("dev-%d", i%1000), Method: "ping", Params: []byte(`{}`), Created: t0, Expires: t0 + 60_000})
			if err != nil {
				b.Error(err)
				return
			}
			ids[i] = c.ID
		}()
	}
	wg.Wait()
	Q, S, D, R := devices.CommandQueued, devices.CommandSent, devices.CommandDelivered, devices.CommandReplied
	b.ResetTimer()
	waits := make([]func(context.Context) (*devices.Command, bool, error), 0, 3*b.N)
	for i, id := range ids {
		device := fmt.Sprintf("dev-%d", i%1000)
		waits = append(waits,
			s.UpdateCommandLater(device, id, []devices.CommandStatus{Q}, S, t0+1, "published", nil, ""),
			s.UpdateCommandLater(device, id, []devices.CommandStatus{Q, S}, D, t0+2, "acknowledged by the device", nil, ""),
			s.UpdateCommandLater(device, id, []devices.CommandStatus{Q, S, D}, R, t0+3, "answered", []byte(`{"pong":true}`), ""))
	}
	for _, wait := range waits {
		if _, ok, err := wait(ctx); err != nil || !ok {
			b.Fatalf("change: ok=%v err=%v", ok, err)
		}
	}
}
