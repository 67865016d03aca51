package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// Backend is what the conformance suite needs of a storage backend.
type Backend struct {
	// NewDB returns the address of a new, empty database: a file path, a
	// URL. Whatever it creates is removed at the end of the test.
	NewDB func(t testing.TB) string
	// Open opens a store on db with o. The suite drains and closes it.
	Open func(db string, o store.Options) (devices.Store, error)
}

// Run runs the conformance suite: every behaviour devices.Store promises,
// one subtest each, against fresh databases of b. Every backend's tests call
// it (in the style of litestream's RunWithReplicaClient), so that SQLite
// and PostgreSQL are held to the same contract.
func Run(t *testing.T, b Backend) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"DenseSeqInCommitOrder", testDenseSeq},
		{"ConcurrentWritersKeepOrder", testConcurrentWriters},
		{"DurableAcrossReopen", testReopen},
		{"DeviceSummaries", testSummaries},
		{"ListMessagesOrderAndCursors", testListMessages},
		{"ListMessagesByReceived", testByReceived},
		{"ListMessagesErrors", testListErrors},
		{"Replay", testReplay},
		{"Series", testSeries},
		{"DeleteMessages", testDeleteMessages},
		{"DeleteDevice", testDeleteDevice},
		{"Retention", testRetention},
		{"RetentionOverrides", testRetentionOverrides},
		{"Credentials", testCredentials},
		{"APITokens", testTokens},
		{"StatusEvents", testStatusEvents},
		{"MetricLimits", testMetricLimits},
		{"EmptyAndExtremePayloads", testExtremes},
		{"DrainAcknowledgesEverything", testDrain},
		{"Commands", testCommands},
		{"Attributes", testAttributes},
		{"AlertRules", testAlertRules},
		{"AlertSteps", testAlertSteps},
		{"Boards", testBoards},
		{"MetricSettings", testMetricSettings},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &harness{t: t, b: b, db: b.NewDB(t)})
		})
	}
}

// harness opens stores of one database for one subtest.
type harness struct {
	t  *testing.T
	b  Backend
	db string

	mu        sync.Mutex
	committed []devices.Message // OnCommit, in call order
	events    []devices.StatusEvent
}

// open opens the database with o (OnCommit and OnStatus recorded); it is
// closed at the end of the test unless the test closes it first.
func (h *harness) open(o store.Options) devices.Store {
	h.t.Helper()
	o.OnCommit = func(b []devices.Message) {
		h.mu.Lock()
		h.committed = append(h.committed, b...)
		h.mu.Unlock()
	}
	o.OnStatus = func(ev devices.StatusEvent) {
		h.mu.Lock()
		h.events = append(h.events, ev)
		h.mu.Unlock()
	}
	s, err := h.b.Open(h.db, o)
	if err != nil {
		h.t.Fatalf("open %s: %v", h.db, err)
	}
	h.t.Cleanup(func() { s.Close() })
	return s
}

// close drains and closes s.
func (h *harness) close(s devices.Store) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		h.t.Fatalf("drain: %v", err)
	}
	if err := s.Close(); err != nil {
		h.t.Fatalf("close: %v", err)
	}
}

// Telemetry is a telemetry message of device with a JSON payload, decoded
// as the hub decodes it (ts in the payload wins over received).
func Telemetry(device string, received int64, payload string) devices.Message {
	ts, values, flags := devices.DecodePayload([]byte(payload), received)
	return devices.Message{
		Device: device, Topic: "devices/" + device + "/telemetry", Kind: devices.KindTelemetry,
		TS: ts, Received: received, QoS: 1, Flags: flags, Payload: []byte(payload), Values: values,
	}
}

// Status is a status message of device.
func Status(device string, received int64, status string) devices.Message {
	return devices.Message{Device: device, Topic: "devices/" + device + "/status", Kind: devices.KindStatus,
		TS: received, Received: received, QoS: 1, Payload: []byte(status)}
}

// WriteAll writes msgs through w, in order, and waits until each is
// committed; it returns them as committed, in Done order.
func WriteAll(tb testing.TB, w devices.MessageWriter, msgs []devices.Message) []devices.Message {
	tb.Helper()
	var mu sync.Mutex
	var done []devices.Message
	var wg sync.WaitGroup
	for _, m := range msgs {
		wg.Add(1)
		p := &devices.Pending{Message: m, Done: func(m *devices.Message, err error) {
			defer wg.Done()
			if err != nil {
				tb.Errorf("Done err=%v", err)
			}
			mu.Lock()
			done = append(done, *m)
			mu.Unlock()
		}}
		if err := w.Write(context.Background(), p); err != nil {
			tb.Fatal(err)
		}
	}
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	select {
	case <-c:
	case <-time.After(60 * time.Second):
		tb.Fatal("messages not committed within 60 s")
	}
	return done
}

// fleet is n messages from devices dev-0 .. dev-(k-1) in turn, one second
// apart from t0, with a counter n and a temperature.
func fleet(n, k int, t0 int64) []devices.Message {
	out := make([]devices.Message, n)
	for i := range out {
		dev := fmt.Sprintf("dev-%d", i%k)
		out[i] = Telemetry(dev, t0+int64(i)*1000, fmt.Sprintf(`{"n":%d,"temp":%d.5}`, i, 20+i%7))
	}
	return out
}

const t0 = int64(1_700_000_000_000) // 2023-11-14, a round-ish Unix ms

func all(tb testing.TB, s devices.Store) []devices.Message {
	tb.Helper()
	var out []devices.Message
	if err := s.Replay(context.Background(), "", 0, s.LastSeq(), func(m *devices.Message) error {
		out = append(out, *m)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return out
}

func testDenseSeq(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	in := fleet(500, 5, t0)
	done := WriteAll(t, s, in)
	for i, m := range done {
		if m.Seq != devices.Seq(i+1) {
			t.Fatalf("Done #%d has seq %d, want %d (dense, in commit order)", i, m.Seq, i+1)
		}
		if string(m.Payload) != string(in[i].Payload) {
			t.Fatalf("Done #%d is %s, want %s (the order written)", i, m.Payload, in[i].Payload)
		}
	}
	if got := s.LastSeq(); got != 500 {
		t.Fatalf("LastSeq=%d, want 500", got)
	}
	// OnCommit follows the Done callbacks of its batch: wait for the last.
	var committed []devices.Message
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		h.mu.Lock()
		committed = slices.Clone(h.committed)
		h.mu.Unlock()
		if len(committed) >= 500 || time.Now().After(deadline) {
			break
		}
	}
	if len(committed) != 500 {
		t.Fatalf("OnCommit saw %d messages, want 500", len(committed))
	}
	for i, m := range committed {
		if m.Seq != devices.Seq(i+1) {
			t.Fatalf("OnCommit #%d has seq %d, want %d", i, m.Seq, i+1)
		}
	}
	stored := all(t, s)
	if len(stored) != 500 {
		t.Fatalf("stored %d, want 500", len(stored))
	}
	for i, m := range stored {
		w := done[i]
		if m.Seq != w.Seq || m.Device != w.Device || m.TS != w.TS || m.Received != w.Received || m.Topic != w.Topic ||
			m.Kind != w.Kind || m.QoS != w.QoS || m.Flags != w.Flags || string(m.Payload) != string(w.Payload) {
			t.Fatalf("stored #%d = %+v, want %+v", i, m, w)
		}
	}
	if ok, msg := s.Healthy(); !ok || s.Commits() == 0 || s.CommitFailures() != 0 || s.QueueLen() != 0 {
		t.Fatalf("healthy=%v %q commits=%d failures=%d queue=%d", ok, msg, s.Commits(), s.CommitFailures(), s.QueueLen())
	}
}

// testConcurrentWriters: many producers at once; the order of Done calls
// is the seq order, and every seq is used once.
func testConcurrentWriters(t *testing.T, h *harness) {
	s := h.open(store.Options{MaxBatch: 64})
	const producers, each = 8, 250
	var mu sync.Mutex
	var order []devices.Seq
	var wg sync.WaitGroup
	wg.Add(producers * each)
	for p := 0; p < producers; p++ {
		go func() {
			for i := 0; i < each; i++ {
				m := Telemetry(fmt.Sprintf("p%d", p), t0+int64(i), fmt.Sprintf(`{"i":%d}`, i))
				err := s.Write(context.Background(), &devices.Pending{Message: m, Done: func(m *devices.Message, err error) {
					defer wg.Done()
					if err != nil {
						t.Errorf("Done: %v", err)
					}
					mu.Lock()
					order = append(order, m.Seq)
					mu.Unlock()
				}})
				if err != nil {
					t.Error(err)
					wg.Done()
				}
			}
		}()
	}
	wg.Wait()
	if len(order) != producers*each {
		t.Fatalf("%d acknowledged, want %d", len(order), producers*each)
	}
	for i, seq := range order {
		if seq != devices.Seq(i+1) {
			t.Fatalf("Done #%d has seq %d: acknowledgements out of seq order or with a gap", i, seq)
		}
	}
	// Each producer's own messages keep their order.
	last := map[string]int64{}
	for _, m := range all(t, s) {
		if m.TS <= last[m.Device] && last[m.Device] != 0 {
			t.Fatalf("device %s: ts %d after %d", m.Device, m.TS, last[m.Device])
		}
		last[m.Device] = m.TS
	}
}

func testReopen(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	WriteAll(t, s, fleet(300, 3, t0))
	before, err := s.ListDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h.close(s)

	s2 := h.open(store.Options{})
	if got := s2.LastSeq(); got != 300 {
		t.Fatalf("LastSeq after reopen = %d, want 300", got)
	}
	after, err := s2.ListDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(deviceKeys(before)) != fmt.Sprint(deviceKeys(after)) {
		t.Fatalf("devices after reopen:\n%v\nwant\n%v", deviceKeys(after), deviceKeys(before))
	}
	done := WriteAll(t, s2, fleet(1, 1, t0+1e6))
	if done[0].Seq != 301 {
		t.Fatalf("first seq after reopen %d, want 301", done[0].Seq)
	}
	if n := len(all(t, s2)); n != 301 {
		t.Fatalf("%d messages stored, want 301", n)
	}
}

// deviceKeys is what must survive a restart of each device's summary.
func deviceKeys(ds []*devices.Device) []string {
	var out []string
	for _, d := range ds {
		var latest []string
		for k, v := range d.Latest {
			latest = append(latest, fmt.Sprintf("%s=%s@%d#%d", k, v.Value, v.TS, v.Seq))
		}
		sort.Strings(latest)
		out = append(out, fmt.Sprintf("%s n=%d first=%d last=%d seq=%d status=%q %v", d.ID, d.MessageCount, d.FirstSeen, d.LastSeen, d.LastSeq, d.Status, latest))
	}
	return out
}

func testSummaries(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	WriteAll(t, s, []devices.Message{
		Telemetry("a", t0, `{"temp":20,"hum":40}`),
		Telemetry("a", t0+1000, `{"temp":21}`),
		Telemetry("a", t0+2000, `{"temp":19,"ts":1600000000000}`), // an older reading: latest stays 21
		Status("a", t0+3000, "online"),
		Telemetry("b", t0+4000, `{"v":"text"}`),
	})
	a, err := s.FindDevice(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if a.MessageCount != 4 || a.FirstSeen != t0 || a.LastSeen != t0+3000 || a.LastSeq != 4 || a.Status != "online" || a.StatusAt != t0+3000 {
		t.Fatalf("a = %+v", a)
	}
	if string(a.Latest["temp"].Value) != "21" || a.Latest["temp"].Seq != 2 || string(a.Latest["hum"].Value) != "40" {
		t.Fatalf("a latest = %v, want temp 21 (seq 2), hum 40", a.Latest)
	}
	list, err := s.ListDevices(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "a" || list[1].ID != "b" {
		t.Fatalf("ListDevices = %v, %v; want a, b", list, err)
	}
	if _, err := s.FindDevice(ctx, "nope"); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("FindDevice(nope) err=%v, want ErrNotFound", err)
	}
	act, ok := s.ActivityOf("a")
	if !ok || act.LastSeen != t0+3000 || act.Status != "online" || len(s.Activity()) != 2 {
		t.Fatalf("ActivityOf(a)=%+v %v, Activity=%v", act, ok, s.Activity())
	}
	// A summary is a copy: changing it changes nothing stored.
	a.Latest["temp"] = devices.Latest{Value: []byte("99")}
	if again, _ := s.FindDevice(ctx, "a"); string(again.Latest["temp"].Value) != "21" {
		t.Fatal("FindDevice returned the store's own map")
	}
}

func testListMessages(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	// Device time runs backwards against arrival for some, with ties.
	var in []devices.Message
	for i := 0; i < 120; i++ {
		ts := t0 + int64((i*37)%40)*1000 // 40 distinct ts, three messages each
		in = append(in, Telemetry("d", t0+int64(i), fmt.Sprintf(`{"i":%d,"ts":%d}`, i, ts)))
		in = append(in, Telemetry("other", t0+int64(i), fmt.Sprintf(`{"i":%d}`, i)))
	}
	WriteAll(t, s, in)
	var want []devices.Message
	for _, m := range all(t, s) {
		if m.Device == "d" {
			want = append(want, m)
		}
	}
	sort.SliceStable(want, func(i, j int) bool {
		if want[i].TS != want[j].TS {
			return want[i].TS < want[j].TS
		}
		return want[i].Seq < want[j].Seq
	})
	for _, desc := range []bool{false, true} {
		for _, page := range []int{1, 7, 200} {
			var got []devices.Message
			f := devices.MessageFilter{Device: "d", Limit: page, Desc: desc}
			f.From, f.To = devices.AllTime()
			for {
				part, err := s.ListMessages(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, part...)
				if len(part) < page {
					break
				}
				last := part[len(part)-1]
				f.After = &devices.Position{TS: last.TS, Seq: last.Seq}
			}
			exp := slices.Clone(want)
			if desc {
				slices.Reverse(exp)
			}
			if seqs(got) != seqs(exp) {
				t.Fatalf("desc=%v page=%d:\n got %s\nwant %s", desc, page, seqs(got), seqs(exp))
			}
		}
	}
	// Bounds are inclusive; all devices when Device is empty.
	f := devices.MessageFilter{Device: "d", From: t0 + 5000, To: t0 + 6000, Limit: 100}
	got, err := s.ListMessages(ctx, f)
	if err != nil || len(got) != 6 {
		t.Fatalf("[t0+5s, t0+6s]: %d messages (%v), want 6", len(got), err)
	}
	for _, m := range got {
		if m.TS < f.From || m.TS > f.To {
			t.Fatalf("ts %d outside the bounds", m.TS)
		}
	}
	every := devices.MessageFilter{Limit: 1000}
	every.From, every.To = devices.AllTime()
	if got, err := s.ListMessages(ctx, every); err != nil || len(got) != 240 {
		t.Fatalf("all devices: %d (%v), want 240", len(got), err)
	}
}

func seqs(ms []devices.Message) string {
	out := make([]devices.Seq, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return fmt.Sprint(out)
}

func testByReceived(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	var in []devices.Message
	for i := 0; i < 50; i++ { // device time far in the past; arrival one second apart
		in = append(in, Telemetry("r", t0+int64(i)*1000, fmt.Sprintf(`{"i":%d,"ts":%d}`, i, 1000+i)))
	}
	WriteAll(t, s, in)
	f := devices.MessageFilter{Device: "r", ByReceived: true, From: t0 + 10_000, To: t0 + 19_000, Limit: 4}
	var got []devices.Message
	for {
		part, err := s.ListMessages(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, part...)
		if len(part) < f.Limit {
			break
		}
		f.After = &devices.Position{Seq: part[len(part)-1].Seq}
	}
	if len(got) != 10 || got[0].Received != t0+10_000 || got[9].Received != t0+19_000 {
		t.Fatalf("by received: %d messages, %s", len(got), seqs(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("by received not in arrival order: %s", seqs(got))
		}
	}
}

func testListErrors(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	WriteAll(t, s, fleet(3, 1, t0))
	from, to := devices.AllTime()
	for _, f := range []devices.MessageFilter{
		{Device: "dev-0", From: from, To: to, Limit: 0},
		{Device: "dev-0", From: from, To: to, Limit: -1},
		{Device: "dev-0", From: to, To: from, Limit: 10},
	} {
		if _, err := s.ListMessages(ctx, f); !errors.Is(err, devices.ErrInvalid) {
			t.Fatalf("%+v: err=%v, want ErrInvalid", f, err)
		}
	}
	if _, err := s.ListMessages(ctx, devices.MessageFilter{Device: "nope", From: from, To: to, Limit: 10}); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("unknown device: err=%v, want ErrNotFound", err)
	}
	// Extreme but valid bounds and cursors answer, empty.
	for _, f := range []devices.MessageFilter{
		{Device: "dev-0", From: to, To: to, Limit: 10},
		{Device: "dev-0", From: from, To: from, Limit: 10},
		{Device: "dev-0", From: from, To: to, Limit: 10, After: &devices.Position{TS: devices.MaxTime, Seq: 1 << 62}},
		{Device: "dev-0", From: from, To: to, Limit: 10, ByReceived: true, After: &devices.Position{Seq: 1 << 62}},
	} {
		if got, err := s.ListMessages(ctx, f); err != nil || len(got) != 0 {
			t.Fatalf("%+v: %d messages, err=%v; want none", f, len(got), err)
		}
	}
}

func testReplay(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	WriteAll(t, s, fleet(3000, 3, t0))
	var got []devices.Message
	collect := func(m *devices.Message) error { got = append(got, *m); return nil }
	if err := s.Replay(ctx, "dev-1", 100, 2500, collect); err != nil {
		t.Fatal(err)
	}
	var want []devices.Seq
	for seq := devices.Seq(101); seq <= 2500; seq++ {
		if (seq-1)%3 == 1 {
			want = append(want, seq)
		}
	}
	var gotSeqs []devices.Seq
	for _, m := range got {
		if m.Device != "dev-1" {
			t.Fatalf("replay of dev-1 gave %s", m.Device)
		}
		gotSeqs = append(gotSeqs, m.Seq)
	}
	if fmt.Sprint(gotSeqs) != fmt.Sprint(want) {
		t.Fatalf("replay dev-1 (100, 2500]: %d messages, want %d, in seq order", len(gotSeqs), len(want))
	}
	got = nil
	if err := s.Replay(ctx, "", 2990, 5000, collect); err != nil || seqs(got) != "[2991 2992 2993 2994 2995 2996 2997 2998 2999 3000]" {
		t.Fatalf("replay all (2990, 5000]: %s, %v", seqs(got), err)
	}
	got = nil
	if err := s.Replay(ctx, "nope", 0, 3000, collect); err != nil || len(got) != 0 {
		t.Fatalf("unknown device replayed %d messages, err=%v", len(got), err)
	}
	if err := s.Replay(ctx, "", 10, 10, collect); err != nil || len(got) != 0 {
		t.Fatalf("empty range replayed %d, err=%v", len(got), err)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.Replay(ctx, "", 0, 3000, func(*devices.Message) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Replay returned %v after %d calls, want fn's error after 1", err, n)
	}
}

func testSeries(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	base := int64(1_699_999_200_000) // a whole hour
	var in []devices.Message
	for i := 0; i < 7200; i++ { // two hours, one reading a second: temp = i % 600, on = even
		in = append(in, Telemetry("s", base+int64(i)*1000, fmt.Sprintf(`{"temp":%d,"on":%v,"label":"x"}`, i%600, i%2 == 0)))
	}
	WriteAll(t, s, in)
	check := func(name string, q devices.SeriesQuery, want func(k int) float64, n int, width int64) {
		t.Helper()
		got, err := s.Series(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		pts := got.Points[q.Metrics[0]]
		if len(pts) != n || got.Seq != 7200 {
			t.Fatalf("%s: %d points at seq %d, want %d at 7200", name, len(pts), got.Seq, n)
		}
		for k, p := range pts {
			if p.TS != base+int64(k)*width || p.V != want(k) {
				t.Fatalf("%s: point %d = %+v, want ts %d value %v", name, k, p, base+int64(k)*width, want(k))
			}
		}
	}
	from, to := base, base+7200_000-1
	minute := func(agg devices.Agg) devices.SeriesQuery {
		return devices.SeriesQuery{Device: "s", Metrics: []string{"temp"}, From: from, To: to, Interval: 60_000, Agg: agg, Limit: 1000}
	}
	check("minute avg", minute(devices.AggAvg), func(k int) float64 { return float64(60*(k%10)) + 29.5 }, 120, 60_000)
	check("minute min", minute(devices.AggMin), func(k int) float64 { return float64(60 * (k % 10)) }, 120, 60_000)
	check("minute max", minute(devices.AggMax), func(k int) float64 { return float64(60*(k%10) + 59) }, 120, 60_000)
	check("minute count", minute(devices.AggCount), func(int) float64 { return 60 }, 120, 60_000)
	check("minute first", minute(devices.AggFirst), func(k int) float64 { return float64(60 * (k % 10)) }, 120, 60_000)
	check("minute last", minute(devices.AggLast), func(k int) float64 { return float64(60*(k%10) + 59) }, 120, 60_000)
	hour := minute(devices.AggSum)
	hour.Interval = 3_600_000
	check("hour sum", hour, func(int) float64 { return 6 * 599 * 600 / 2 }, 2, 3_600_000)
	odd := minute(devices.AggMax)
	odd.Interval = 90_000
	check("90 s max", odd, func(k int) float64 {
		best := 0
		for i := 90 * k; i < 90*k+90; i++ {
			best = max(best, i%600)
		}
		return float64(best)
	}, 80, 90_000)
	// The same answers from the rollups a restart saved.
	h.close(s)
	s = h.open(store.Options{})
	check("minute avg after reopen", minute(devices.AggAvg), func(k int) float64 { return float64(60*(k%10)) + 29.5 }, 120, 60_000)
	check("hour sum after reopen", hour, func(int) float64 { return 6 * 599 * 600 / 2 }, 2, 3_600_000)
	raw := devices.SeriesQuery{Device: "s", Metrics: []string{"temp"}, From: base + 100_000, To: to, Limit: 50}
	got, err := s.Series(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if pts := got.Points["temp"]; len(pts) != 50 || !got.Truncated || pts[0].TS != base+100_000 || pts[49].V != 149 {
		t.Fatalf("raw: %d points (truncated %v)", len(pts), got.Truncated)
	}
	b, err := s.Series(ctx, devices.SeriesQuery{Device: "s", Metrics: []string{"on", "label"}, From: from, To: to, Interval: 3_600_000, Agg: devices.AggAvg, Limit: 10})
	if err != nil || len(b.Points["on"]) != 2 || b.Points["on"][0].V != 0.5 || len(b.Points["label"]) != 0 {
		t.Fatalf("booleans average to 0.5 and strings have no points: %v %v", b.Points, err)
	}
	if _, err := s.Series(ctx, devices.SeriesQuery{Device: "nope", Metrics: []string{"t"}, From: from, To: to, Limit: 1}); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("unknown device: err=%v, want ErrNotFound", err)
	}
	if _, err := s.Series(ctx, devices.SeriesQuery{Device: "s", From: from, To: to, Limit: 1}); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("no metrics: err=%v, want ErrInvalid", err)
	}
}

func testDeleteMessages(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	WriteAll(t, s, fleet(100, 2, t0)) // dev-0 at t0, t0+2s, ...; dev-1 at t0+1s, ...
	n, err := s.DeleteMessages(ctx, "dev-0", t0, t0+19_000)
	if err != nil || n != 10 {
		t.Fatalf("deleted %d (%v), want 10", n, err)
	}
	d, err := s.FindDevice(ctx, "dev-0")
	if err != nil || d.MessageCount != 40 {
		t.Fatalf("dev-0 after delete: %+v, %v; want 40 messages", d, err)
	}
	from, to := devices.AllTime()
	left, _ := s.ListMessages(ctx, devices.MessageFilter{Device: "dev-0", From: from, To: to, Limit: 100})
	if len(left) != 40 || left[0].TS != t0+20_000 {
		t.Fatalf("%d left, first at %d; want 40 from t0+20s", len(left), left[0].TS)
	}
	// Deleting the newest messages rebuilds the latest values from the rest.
	if _, err := s.DeleteMessages(ctx, "dev-0", t0+90_000, devices.MaxTime); err != nil {
		t.Fatal(err)
	}
	d, _ = s.FindDevice(ctx, "dev-0")
	if string(d.Latest["n"].Value) != "88" {
		t.Fatalf("latest n after deleting the newest = %s, want 88", d.Latest["n"].Value)
	}
	// Series see the delete at minute resolution too.
	ser, err := s.Series(ctx, devices.SeriesQuery{Device: "dev-0", Metrics: []string{"n"}, From: t0 - 3_600_000, To: t0 + 3_600_000, Interval: 3_600_000, Agg: devices.AggCount, Limit: 10})
	var count float64
	for _, p := range ser.Points["n"] {
		count += p.V
	}
	if err != nil || count != 35 {
		t.Fatalf("series count after deletes = %v (%v), want 35", count, err)
	}
	if other, _ := s.FindDevice(ctx, "dev-1"); other.MessageCount != 50 {
		t.Fatalf("dev-1 lost messages: %d", other.MessageCount)
	}
	if _, err := s.DeleteMessages(ctx, "nope", from, to); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("unknown device: err=%v, want ErrNotFound", err)
	}
	if _, err := s.DeleteMessages(ctx, "dev-0", to, from); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("from after to: err=%v, want ErrInvalid", err)
	}
}

func testDeleteDevice(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	WriteAll(t, s, fleet(30, 3, t0))
	if err := s.SetStatus(ctx, devices.StatusEvent{Device: "dev-1", Status: "online", At: t0, Reason: "connected"}); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteDevice(ctx, "dev-1")
	if err != nil || n != 10 {
		t.Fatalf("DeleteDevice: %d (%v), want 10", n, err)
	}
	if _, err := s.FindDevice(ctx, "dev-1"); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("deleted device found: %v", err)
	}
	if _, ok := s.ActivityOf("dev-1"); ok {
		t.Fatal("deleted device still has activity")
	}
	var left []devices.Message
	s.Replay(ctx, "", 0, s.LastSeq(), func(m *devices.Message) error { left = append(left, *m); return nil })
	for _, m := range left {
		if m.Device == "dev-1" {
			t.Fatalf("message of the deleted device left: %+v", m)
		}
	}
	if len(left) != 20 {
		t.Fatalf("%d messages left, want 20", len(left))
	}
	if _, err := s.DeleteDevice(ctx, "dev-1"); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	// A later message creates it anew, with a seq above every earlier one.
	done := WriteAll(t, s, []devices.Message{Telemetry("dev-1", t0+1e6, `{"n":1}`)})
	if done[0].Seq != 31 {
		t.Fatalf("seq after delete = %d, want 31 (never reused)", done[0].Seq)
	}
	if d, err := s.FindDevice(ctx, "dev-1"); err != nil || d.MessageCount != 1 {
		t.Fatalf("recreated: %+v %v", d, err)
	}
	if ev, err := s.StatusEvents(ctx, "dev-1", 10); err != nil || len(ev) != 0 {
		t.Fatalf("events of the recreated device: %v %v; want none", ev, err)
	}
}

func testRetention(t *testing.T, h *harness) {
	s := h.open(store.Options{Retention: 24 * time.Hour})
	ctx := context.Background()
	now := time.Now().UnixMilli()
	old := now - 72*3_600_000
	var in []devices.Message
	for i := 0; i < 20; i++ {
		in = append(in, Telemetry("ret", now, fmt.Sprintf(`{"n":%d,"ts":%d}`, i, old+int64(i)*1000)))
	}
	for i := 0; i < 5; i++ {
		in = append(in, Telemetry("ret", now, fmt.Sprintf(`{"n":%d}`, 100+i)))
	}
	WriteAll(t, s, in)
	res, err := s.RunRetention(ctx)
	if err != nil || res.Deleted != 20 || res.Devices != 1 {
		t.Fatalf("retention: %+v %v; want 20 deleted from 1 device", res, err)
	}
	d, _ := s.FindDevice(ctx, "ret")
	if d.MessageCount != 5 {
		t.Fatalf("count after retention %d, want 5", d.MessageCount)
	}
	from, to := devices.AllTime()
	if got, _ := s.ListMessages(ctx, devices.MessageFilter{Device: "ret", From: from, To: to, Limit: 100}); len(got) != 5 {
		t.Fatalf("%d messages left, want 5", len(got))
	}
	ser, _ := s.Series(ctx, devices.SeriesQuery{Device: "ret", Metrics: []string{"n"}, From: from + 1, To: to - 1, Interval: 3_600_000, Agg: devices.AggCount, Limit: 1000})
	var count float64
	for _, p := range ser.Points["n"] {
		count += p.V
	}
	if count != 5 {
		t.Fatalf("series count after retention %v, want 5", count)
	}
	if res, err := s.RunRetention(ctx); err != nil || res.Deleted != 0 {
		t.Fatalf("second pass: %+v %v; want nothing", res, err)
	}
}

func testRetentionOverrides(t *testing.T, h *harness) {
	s := h.open(store.Options{Retention: 24 * time.Hour})
	ctx := context.Background()
	if d, own, err := s.RetentionOf(ctx, "x"); err != nil || own || d != 24*time.Hour {
		t.Fatalf("RetentionOf = %v %v %v, want the hub's 24h", d, own, err)
	}
	if err := s.SetRetention(ctx, "x", 0); err != nil {
		t.Fatal(err)
	}
	if d, own, _ := s.RetentionOf(ctx, "x"); !own || d != 0 {
		t.Fatalf("after SetRetention(0): %v own=%v", d, own)
	}
	old := time.Now().UnixMilli() - 72*3_600_000
	WriteAll(t, s, []devices.Message{
		Telemetry("x", old, fmt.Sprintf(`{"n":1,"ts":%d}`, old)),
		Telemetry("y", old, fmt.Sprintf(`{"n":1,"ts":%d}`, old)),
	})
	if res, err := s.RunRetention(ctx); err != nil || res.Deleted != 1 {
		t.Fatalf("retention: %+v %v; want only y's message deleted", res, err)
	}
	if _, err := s.FindDevice(ctx, "x"); err != nil {
		t.Fatal("x's message went despite its own retention")
	}
	if err := s.SetRetention(ctx, "x", -time.Hour); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("negative retention: %v, want ErrInvalid", err)
	}
	h.close(s)
	s = h.open(store.Options{Retention: 24 * time.Hour})
	if d, own, _ := s.RetentionOf(ctx, "x"); !own || d != 0 {
		t.Fatalf("override lost on reopen: %v own=%v", d, own)
	}
	if err := s.ClearRetention(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if res, err := s.RunRetention(ctx); err != nil || res.Deleted != 1 {
		t.Fatalf("after ClearRetention: %+v %v; want x's message deleted", res, err)
	}
}

func testCredentials(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	tok, err := s.AddDevice(ctx, "sensor-1")
	if err != nil || tok == "" {
		t.Fatal(err)
	}
	if _, err := s.AddDevice(ctx, "sensor-1"); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("second AddDevice: %v, want ErrConflict", err)
	}
	if _, err := s.AddDevice(ctx, "bad/id"); err == nil {
		t.Fatal("AddDevice accepted an invalid id")
	}
	if dev, err := s.AuthenticateDevice(ctx, tok); err != nil || dev != "sensor-1" {
		t.Fatalf("AuthenticateDevice = %q %v", dev, err)
	}
	tok2, err := s.RotateDevice(ctx, "sensor-1")
	if err != nil || tok2 == tok {
		t.Fatalf("RotateDevice: %v", err)
	}
	if _, err := s.AuthenticateDevice(ctx, tok); !errors.Is(err, devices.ErrUnauthorized) {
		t.Fatalf("old token after rotate: %v, want ErrUnauthorized", err)
	}
	if list, err := s.DeviceCredentials(ctx); err != nil || len(list) != 1 || list[0].Device != "sensor-1" {
		t.Fatalf("DeviceCredentials = %v %v", list, err)
	}
	if err := s.RevokeDevice(ctx, "sensor-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateDevice(ctx, tok2); !errors.Is(err, devices.ErrUnauthorized) {
		t.Fatalf("revoked token: %v", err)
	}
	for _, err := range []error{s.RevokeDevice(ctx, "sensor-1"), func() error { _, err := s.RotateDevice(ctx, "sensor-1"); return err }()} {
		if !errors.Is(err, devices.ErrNotFound) {
			t.Fatalf("without a credential: %v, want ErrNotFound", err)
		}
	}
	for _, bad := range []string{"", "x", "thd_" + string(make([]byte, 300)), "\x00\xff"} {
		if _, err := s.AuthenticateDevice(ctx, bad); !errors.Is(err, devices.ErrUnauthorized) {
			t.Fatalf("token %q: %v, want ErrUnauthorized", bad, err)
		}
	}
}

func testTokens(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	if has, err := s.HasTokens(ctx); err != nil || has {
		t.Fatalf("HasTokens on a fresh store = %v %v", has, err)
	}
	admin, err := s.AddToken(ctx, "ops", devices.ScopeAdmin)
	if err != nil {
		t.Fatal(err)
	}
	read, err := s.AddToken(ctx, "viewer", devices.ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddToken(ctx, "ops", devices.ScopeRead); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("duplicate name: %v, want ErrConflict", err)
	}
	if tk, err := s.AuthenticateToken(ctx, admin); err != nil || tk.Name != "ops" || tk.Scope != devices.ScopeAdmin {
		t.Fatalf("admin token = %+v %v", tk, err)
	}
	if tk, err := s.AuthenticateToken(ctx, read); err != nil || tk.Scope != devices.ScopeRead {
		t.Fatalf("read token = %+v %v", tk, err)
	}
	if list, err := s.Tokens(ctx); err != nil || len(list) != 2 {
		t.Fatalf("Tokens = %v %v", list, err)
	}
	if err := s.RevokeToken(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateToken(ctx, admin); !errors.Is(err, devices.ErrUnauthorized) {
		t.Fatalf("revoked: %v", err)
	}
	if err := s.RevokeToken(ctx, "ops"); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("second revoke: %v, want ErrNotFound", err)
	}
	if has, _ := s.HasTokens(ctx); !has {
		t.Fatal("HasTokens false with a token left")
	}
}

func testStatusEvents(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	// A device the hub never stored a message of is created by its status.
	for i, st := range []string{"online", "offline", "online"} {
		if err := s.SetStatus(ctx, devices.StatusEvent{Device: "p", Status: st, At: t0 + int64(i)*1000, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := s.StatusEvents(ctx, "p", 2)
	if err != nil || len(ev) != 2 || ev[0].Status != "online" || ev[0].At != t0+2000 || ev[1].Status != "offline" {
		t.Fatalf("StatusEvents = %+v %v; want the newest two, newest first", ev, err)
	}
	if act, ok := s.ActivityOf("p"); !ok || act.Status != "online" || act.StatusAt != t0+2000 {
		t.Fatalf("ActivityOf = %+v %v", act, ok)
	}
	h.mu.Lock()
	seen := len(h.events)
	h.mu.Unlock()
	if seen != 3 {
		t.Fatalf("OnStatus saw %d events, want 3", seen)
	}
	if _, err := s.StatusEvents(ctx, "nope", 10); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("unknown device: %v, want ErrNotFound", err)
	}
	if err := s.SetStatus(ctx, devices.StatusEvent{Device: "bad/id", Status: "online", At: t0}); err == nil {
		t.Fatal("SetStatus accepted an invalid device id")
	}
	// After a restart, a device left "online" by a connection is stale; one
	// that said so itself is not.
	WriteAll(t, s, []devices.Message{Status("self", t0, "online")})
	h.close(s)
	s = h.open(store.Options{})
	stale, err := s.StaleOnline(ctx)
	if err != nil || fmt.Sprint(stale) != "[p]" {
		t.Fatalf("StaleOnline = %v %v, want [p]", stale, err)
	}
}

func testMetricLimits(t *testing.T, h *harness) {
	s := h.open(store.Options{MaxMetrics: 3, MaxMetricName: 10})
	ctx := context.Background()
	WriteAll(t, s, []devices.Message{Telemetry("m", t0, `{"a":1,"b":2}`)})
	write := func(payload string) error {
		return s.Write(ctx, &devices.Pending{Message: Telemetry("m", t0, payload)})
	}
	if err := write(`{"c":1,"d":2}`); !errors.Is(err, devices.ErrTooManyMetrics) {
		t.Fatalf("past MaxMetrics: %v, want ErrTooManyMetrics", err)
	}
	if err := write(`{"abcdefghijk":1}`); !errors.Is(err, devices.ErrMetricName) {
		t.Fatalf("long name: %v, want ErrMetricName", err)
	}
	if err := s.TryWrite(&devices.Pending{Message: Telemetry("m", t0, `{"x":1,"y":1}`)}); !errors.Is(err, devices.ErrTooManyMetrics) {
		t.Fatalf("TryWrite past MaxMetrics: %v", err)
	}
	WriteAll(t, s, []devices.Message{Telemetry("m", t0, `{"a":3,"c":1}`)}) // one new name: allowed
	h.close(s)
	// The names a device has survive a restart.
	s = h.open(store.Options{MaxMetrics: 3})
	if err := s.Write(ctx, &devices.Pending{Message: Telemetry("m", t0, `{"z":1}`)}); !errors.Is(err, devices.ErrTooManyMetrics) {
		t.Fatalf("after reopen: %v, want ErrTooManyMetrics", err)
	}
}

func testExtremes(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = byte(i)
	}
	in := []devices.Message{
		{Device: "e", Topic: "devices/e/telemetry", Kind: devices.KindTelemetry, TS: devices.MaxTime, Received: t0, Flags: devices.FlagBadTS},
		{Device: "e", Topic: "devices/e/telemetry", Kind: devices.KindTelemetry, TS: devices.MinTime, Received: t0, Payload: big, Flags: devices.FlagNotJSON},
		Telemetry("e", t0, `{"huge":1e308,"tiny":-1e308,"u":"\u00e9\u4e2d\ud83d\ude00"}`),
		{Device: "é-ünï", Topic: "devices/é-ünï/telemetry", Kind: devices.KindTelemetry, TS: t0, Received: t0, Payload: []byte(`{}`)},
	}
	done := WriteAll(t, s, in)
	got := all(t, s)
	if len(got) != len(in) {
		t.Fatalf("%d stored, want %d", len(got), len(in))
	}
	for i, m := range got {
		if m.TS != in[i].TS || string(m.Payload) != string(in[i].Payload) || m.Flags != in[i].Flags || m.Device != in[i].Device || m.Seq != done[i].Seq {
			t.Fatalf("#%d came back as ts %d, %d payload bytes, flags %v, device %q", i, m.TS, len(m.Payload), m.Flags, m.Device)
		}
	}
	ser, err := s.Series(ctx, devices.SeriesQuery{Device: "e", Metrics: []string{"huge", "tiny"}, From: t0 - 3_600_000, To: t0 + 3_600_000, Interval: 60_000, Agg: devices.AggSum, Limit: 10})
	if err != nil || len(ser.Points["huge"]) != 1 || ser.Points["huge"][0].V != 1e308 || ser.Points["tiny"][0].V != -1e308 {
		t.Fatalf("extreme values: %v %v", ser, err)
	}
}

// testDrain: messages accepted before Drain are all committed and
// acknowledged; afterwards writes are refused with ErrClosed.
func testDrain(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for _, m := range fleet(2000, 10, t0) {
		wg.Add(1)
		if err := s.Write(context.Background(), &devices.Pending{Message: m, Done: func(_ *devices.Message, err error) {
			defer wg.Done()
			if err == nil {
				mu.Lock()
				acked++
				mu.Unlock()
			}
		}}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if acked != 2000 {
		t.Fatalf("%d acknowledged after Drain, want 2000", acked)
	}
	if err := s.Write(context.Background(), &devices.Pending{Message: fleet(1, 1, t0)[0]}); !errors.Is(err, devices.ErrClosed) {
		t.Fatalf("Write after Drain: %v, want ErrClosed", err)
	}
	if n := len(all(t, s)); n != 2000 {
		t.Fatalf("reads after Drain: %d messages, want 2000", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = h.open(store.Options{})
	if s.LastSeq() != 2000 {
		t.Fatalf("LastSeq after reopen %d, want 2000", s.LastSeq())
	}
}

func testCommands(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	mk := func(device, method string, expires int64, oneway bool) *devices.Command {
		t.Helper()
		c, err := s.CreateCommand(ctx, devices.Command{Device: device, Method: method, Params: json.RawMessage(`{"n":1}`), Oneway: oneway, Created: t0, Expires: expires})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a1 := mk("a", "m1", t0+60_000, false)
	a2 := mk("a", "m2", t0+60_000, false)
	a3 := mk("a", "m3", t0+1000, true)
	b1 := mk("b", "m1", t0+60_000, false)
	if a1.ID <= 0 || a2.ID <= a1.ID || a3.ID <= a2.ID || b1.ID <= a3.ID || a1.Status != devices.CommandQueued {
		t.Fatalf("ids %d %d %d %d, status %s: want positive, increasing, queued", a1.ID, a2.ID, a3.ID, b1.ID, a1.Status)
	}
	if _, err := s.CreateCommand(ctx, devices.Command{Device: "bad/id", Method: "m"}); err == nil {
		t.Fatal("CreateCommand accepted an invalid device id")
	}
	got, err := s.Command(ctx, "a", a2.ID)
	if err != nil || got.Method != "m2" || string(got.Params) != `{"n":1}` || got.Expires != t0+60_000 || len(got.History) != 1 {
		t.Fatalf("Command = %+v %v", got, err)
	}
	if _, err := s.Command(ctx, "b", a2.ID); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("another device's command: %v, want ErrNotFound", err)
	}
	// Compare-and-set status changes, each recorded.
	up := func(id int64, from []devices.CommandStatus, to devices.CommandStatus, resp string) bool {
		t.Helper()
		var r json.RawMessage
		if resp != "" {
			r = json.RawMessage(resp)
		}
		c, ok, err := s.UpdateCommand(ctx, "", id, from, to, t0+100, string(to), r, "")
		if err != nil {
			t.Fatal(err)
		}
		if ok && c.Status != to {
			t.Fatalf("updated to %s, reads %s", to, c.Status)
		}
		return ok
	}
	Q, S, D := devices.CommandQueued, devices.CommandSent, devices.CommandDelivered
	if !up(a1.ID, []devices.CommandStatus{Q}, S, "") || !up(a1.ID, []devices.CommandStatus{S}, D, "") {
		t.Fatal("queued -> sent -> delivered refused")
	}
	if up(a1.ID, []devices.CommandStatus{Q}, S, "") {
		t.Fatal("a delivered command moved back to sent")
	}
	if !up(a1.ID, []devices.CommandStatus{S, D}, devices.CommandReplied, `{"ok":true}`) {
		t.Fatal("delivered -> replied refused")
	}
	c, _ := s.Command(ctx, "a", a1.ID)
	var hist []string
	for _, e := range c.History {
		hist = append(hist, string(e.Status))
	}
	if string(c.Response) != `{"ok":true}` || fmt.Sprint(hist) != "[queued sent delivered replied]" {
		t.Fatalf("replied command: response %s, history %v", c.Response, hist)
	}
	// Only the command's own device moves it.
	if _, ok, err := s.UpdateCommand(ctx, "b", a2.ID, []devices.CommandStatus{Q}, S, t0, "", nil, ""); err != nil || ok {
		t.Fatalf("b moved a's command: ok=%v err=%v", ok, err)
	}
	// Pending: queued or sent, not expired, oldest first.
	pend, err := s.PendingCommands(ctx, "a", t0+500)
	if err != nil || len(pend) != 2 || pend[0].ID != a2.ID || pend[1].ID != a3.ID {
		t.Fatalf("pending at t0+500 = %v %v; want a2, a3", pend, err)
	}
	if pend, _ := s.PendingCommands(ctx, "a", t0+2000); len(pend) != 1 || pend[0].ID != a2.ID {
		t.Fatalf("pending at t0+2s = %v; a3 has expired", pend)
	}
	// Due: open and past the deadline; a delivered one-way command is done.
	if due, err := s.DueCommands(ctx, t0+2000, 10); err != nil || len(due) != 1 || due[0].ID != a3.ID {
		t.Fatalf("due at t0+2s = %v %v; want a3", due, err)
	}
	up(a3.ID, []devices.CommandStatus{Q}, D, "")
	if due, _ := s.DueCommands(ctx, t0+2000, 10); len(due) != 0 {
		t.Fatalf("a delivered one-way command is due: %v", due)
	}
	// A delivered one-way command has ended: it is not in the queue.
	if open, err := s.OpenCommands(ctx); err != nil || open[Q] != 2 || open[D] != 0 || open[S] != 0 {
		t.Fatalf("OpenCommands = %v %v; want a2 and b1 queued, nothing else", open, err)
	}
	if q, err := s.QueuedDevices(ctx, t0+500, 10); err != nil || len(q) != 2 {
		t.Fatalf("QueuedDevices = %v %v; want a (a2) and b (b1)", q, err)
	}
	if n, err := s.CountPending(ctx, "a"); err != nil || n != 1 {
		t.Fatalf("CountPending(a) = %d %v, want 1", n, err)
	}
	// Listing: newest first, by status, in pages.
	list, err := s.ListCommands(ctx, devices.CommandFilter{Device: "a", Limit: 2})
	if err != nil || len(list) != 2 || list[0].ID != a3.ID || list[1].ID != a2.ID {
		t.Fatalf("list = %v %v", list, err)
	}
	if rest, _ := s.ListCommands(ctx, devices.CommandFilter{Device: "a", Limit: 2, Before: a2.ID}); len(rest) != 1 || rest[0].ID != a1.ID {
		t.Fatalf("second page = %v", rest)
	}
	if q, _ := s.ListCommands(ctx, devices.CommandFilter{Device: "a", Status: Q, Limit: 10}); len(q) != 1 || q[0].ID != a2.ID {
		t.Fatalf("queued = %v", q)
	}
	if _, err := s.ListCommands(ctx, devices.CommandFilter{Device: "a"}); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("no limit: %v, want ErrInvalid", err)
	}
	// Commands survive a restart.
	h.close(s)
	s = h.open(store.Options{})
	if c, err := s.Command(ctx, "b", b1.ID); err != nil || c.Status != Q {
		t.Fatalf("after reopen: %+v %v", c, err)
	}
	if next, err := s.CreateCommand(ctx, devices.Command{Device: "b", Method: "m", Params: json.RawMessage(`{}`), Created: t0, Expires: t0 + 1}); err != nil || next.ID <= b1.ID {
		t.Fatalf("id after reopen %v %v: ids never go back", next, err)
	}
}

func testAttributes(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	set := func(scope devices.AttributeScope, js string, replace bool, at int64) string {
		t.Helper()
		m, err := devices.ParseAttributes([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		changed, err := s.SetAttributes(ctx, "twin", scope, m, replace, at)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(changed)
		return string(b)
	}
	if a, err := s.Attributes(ctx, "twin"); err != nil || len(a.Shared) != 0 || len(a.Client) != 0 {
		t.Fatalf("no attributes yet: %+v %v", a, err)
	}
	if ch := set(devices.AttrShared, `{"target":21.5,"mode":"eco"}`, false, t0); ch != `{"mode":"eco","target":21.5}` {
		t.Fatalf("first set changed %s", ch)
	}
	if ch := set(devices.AttrShared, `{"target":21.5,"mode":"away"}`, false, t0+1); ch != `{"mode":"away"}` {
		t.Fatalf("merge changed %s, want only mode", ch)
	}
	if ch := set(devices.AttrShared, `{"mode":null,"fan":{"on":true}}`, false, t0+2); ch != `{"fan":{"on":true},"mode":null}` {
		t.Fatalf("null deletes: changed %s", ch)
	}
	set(devices.AttrClient, `{"fw":"1.2.3"}`, false, t0+3)
	a, err := s.Attributes(ctx, "twin")
	if err != nil || len(a.Shared) != 2 || string(a.Shared["target"].Value) != "21.5" || a.Shared["target"].TS != t0 ||
		string(a.Shared["fan"].Value) != `{"on":true}` || a.Shared["fan"].TS != t0+2 || string(a.Client["fw"].Value) != `"1.2.3"` {
		t.Fatalf("attributes = %+v %v", a, err)
	}
	// Replace: the scope becomes exactly what is given; the other scope stays.
	if ch := set(devices.AttrShared, `{"target":19}`, true, t0+4); ch != `{"fan":null,"target":19}` {
		t.Fatalf("replace changed %s", ch)
	}
	a, _ = s.Attributes(ctx, "twin")
	if len(a.Shared) != 1 || len(a.Client) != 1 {
		t.Fatalf("after replace: %+v", a)
	}
	ev, err := s.AttributeEvents(ctx, "twin", 10)
	if err != nil || len(ev) != 5 || ev[0].Scope != devices.AttrShared || ev[0].At != t0+4 || string(ev[0].Change["fan"]) != "null" || ev[1].Scope != devices.AttrClient {
		t.Fatalf("attribute events = %+v %v; want five changes, newest first", ev, err)
	}
	if other, _ := s.Attributes(ctx, "other"); len(other.Shared) != 0 {
		t.Fatalf("another device sees %+v", other.Shared)
	}
	if _, err := s.SetAttributes(ctx, "twin", "bogus", nil, false, t0); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("unknown scope: %v", err)
	}
	many := map[string]json.RawMessage{}
	for i := 0; i <= devices.MaxAttributes; i++ {
		many[fmt.Sprint("k", i)] = json.RawMessage("1")
	}
	if _, err := s.SetAttributes(ctx, "twin", devices.AttrClient, many, false, t0); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("past MaxAttributes: %v, want ErrInvalid", err)
	}
	h.close(s)
	s = h.open(store.Options{})
	if a, _ := s.Attributes(ctx, "twin"); string(a.Shared["target"].Value) != "19" || a.Shared["target"].TS != t0+4 {
		t.Fatalf("after reopen: %+v", a)
	}
}
