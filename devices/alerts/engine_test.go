package alerts

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

// These tests drive the evaluator step by step (load, batches, ticks,
// save) on a real SQLite store, with message times and the clock under
// the test's control. End-to-end tests over MQTT and webhooks are in
// cmd/telehub.

const t0 = int64(1_700_000_000_000)

type rig struct {
	t     *testing.T
	path  string
	s     *sqlite.Store
	e     *Engine
	now   int64
	act   []devices.Activity
	mu    sync.Mutex
	feed  []devices.Alert
	batch []devices.Message
}

func newRig(t *testing.T) *rig {
	r := &rig{t: t, path: filepath.Join(t.TempDir(), "t.db"), now: t0}
	r.open()
	return r
}

func (r *rig) open() {
	s, err := sqlite.Open(r.path, store.Options{OnCommit: func(b []devices.Message) {
		r.mu.Lock()
		r.batch = append(r.batch, b...)
		r.mu.Unlock()
	}})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { s.Close() })
	r.s = s
	r.e = &Engine{Store: s, Messages: s, Feed: new(devices.Feed), Activity: func() []devices.Activity { return r.act },
		Now: func() time.Time { return time.UnixMilli(r.now) }, Webhooks: []string{"http://127.0.0.1:9/hook"},
		OnChange: func(a devices.Alert) { r.feed = append(r.feed, a) }}
	r.e.init()
	if err := r.e.load(context.Background()); err != nil {
		r.t.Fatal(err)
	}
}

// restart closes the store (as a stop would) and opens it again, with a
// new engine that resumes from what was saved.
func (r *rig) restart() {
	r.s.Close()
	r.batch = nil
	r.open()
}

func (r *rig) rule(rule devices.Rule) *devices.Rule {
	r.t.Helper()
	got, err := r.e.CreateRule(context.Background(), rule)
	if err != nil {
		r.t.Fatal(err)
	}
	r.e.loadRules(context.Background())
	return got
}

// send commits messages of device at the current time, one per payload,
// and hands the committed batch to the evaluator, then saves.
func (r *rig) send(device string, payloads ...string) {
	r.t.Helper()
	var msgs []devices.Message
	for _, p := range payloads {
		msgs = append(msgs, storetest.Telemetry(device, r.now, p))
		r.now += 1000
	}
	done := storetest.WriteAll(r.t, r.s, msgs)
	b := r.committed(done[len(done)-1].Seq)
	r.e.onBatch(context.Background(), b)
	r.save()
}

// committed takes the batches the feed got, once they reach seq: the
// pipeline calls Done (WriteAll's wait) before OnCommit.
func (r *rig) committed(seq devices.Seq) []devices.Message {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		b := r.batch
		if len(b) > 0 && b[len(b)-1].Seq >= seq {
			r.batch = nil
			r.mu.Unlock()
			return b
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			r.t.Fatalf("the feed did not get seq %d", seq)
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *rig) tick() {
	r.e.onTick(r.now)
	r.save()
}

func (r *rig) save() {
	r.t.Helper()
	if !r.e.save(context.Background(), true) {
		r.t.Fatal("save failed")
	}
}

func (r *rig) alerts(f devices.AlertFilter) []devices.Alert {
	r.t.Helper()
	f.Limit = 100
	list, err := r.s.ListAlerts(context.Background(), f)
	if err != nil {
		r.t.Fatal(err)
	}
	return list
}

// summary is "status:count" per alert, oldest first.
func (r *rig) summary() string {
	list := r.alerts(devices.AlertFilter{})
	var out []string
	for i := len(list) - 1; i >= 0; i-- {
		out = append(out, fmt.Sprintf("%s/%s:%d", list[i].Device, list[i].Status, list[i].Count))
	}
	return strings.Join(out, " ")
}

func f(v float64) *float64 { return &v }
func n(v int64) *int64     { return &v }

func TestThreshold_HysteresisDoesNotFlap(t *testing.T) {
	r := newRig(t)
	r.rule(devices.Rule{Name: "hot", DevicePrefix: "kitchen-", Metric: "temp", Op: ">", Value: f(30), Clear: f(28)})
	r.send("kitchen-1", `{"temp":29}`)
	if got := r.summary(); got != "" {
		t.Fatalf("below the threshold: %q", got)
	}
	// A value hovering around the threshold raises one alert, not one per
	// crossing: it clears only below 28.
	r.send("kitchen-1", `{"temp":30.5}`, `{"temp":29.9}`, `{"temp":30.1}`, `{"temp":29.5}`, `{"temp":30.2}`)
	if got := r.summary(); got != "kitchen-1/active:3" {
		t.Fatalf("hovering: %q, want one active alert with 3 triggers", got)
	}
	r.send("kitchen-1", `{"temp":27.5}`)
	if got := r.summary(); got != "kitchen-1/cleared:3" {
		t.Fatalf("below clear: %q", got)
	}
	r.send("kitchen-1", `{"temp":31}`)
	r.send("kitchen-2", `{"temp":40}`, `{"hum":50}`, `{"temp":"hot"}`)
	r.send("garage", `{"temp":99}`) // not in the rule's scope
	if got := r.summary(); got != "kitchen-1/cleared:3 kitchen-1/active:1 kitchen-2/active:1" {
		t.Fatalf("again and on another device: %q", got)
	}
	a := r.alerts(devices.AlertFilter{Device: "kitchen-2"})[0]
	if *a.FirstValue != 40 || a.Metric != "temp" || a.Severity != devices.SeverityMajor || a.Message != "temp is 40 (> 30)" {
		t.Fatalf("alert = %+v", a)
	}
	full, _ := r.s.Alert(context.Background(), a.ID)
	if len(full.Deliveries) != 1 || full.Deliveries[0].URL != "http://127.0.0.1:9/hook" || full.Deliveries[0].Status != devices.DeliveryPending {
		t.Fatalf("deliveries = %+v", full.Deliveries)
	}
	if len(r.feed) != 4 { // raised, cleared, raised, raised
		t.Fatalf("%d live changes, want 4", len(r.feed))
	}
}

func TestThreshold_ForHoldsBeforeRaising(t *testing.T) {
	r := newRig(t)
	r.rule(devices.Rule{Name: "hot", Device: "d", Metric: "temp", Op: ">=", Value: f(30), For: devices.Duration(10 * time.Second)})
	r.send("d", `{"temp":31}`, `{"temp":32}`) // 1 s of holding
	r.send("d", `{"temp":20}`)                // the condition breaks: starts again
	r.send("d", `{"temp":33}`)
	r.now += 5000
	r.tick()
	if got := r.summary(); got != "" {
		t.Fatalf("after 6 s: %q", got)
	}
	// No new reading, but the last one has held for 10 s: the timer raises.
	r.now += 5000
	r.tick()
	if got := r.summary(); got != "d/active:1" {
		t.Fatalf("after 11 s: %q", got)
	}
	if a := r.alerts(devices.AlertFilter{})[0]; *a.FirstValue != 33 {
		t.Fatalf("first value %v, want the reading that held", *a.FirstValue)
	}
}

func TestRestart_ResumesWithoutMissingOrRepeating(t *testing.T) {
	r := newRig(t)
	r.rule(devices.Rule{Name: "hot", Metric: "temp", Op: ">", Value: f(30), For: devices.Duration(5 * time.Second)})
	r.send("d", `{"temp":31}`, `{"temp":31}`) // pending, 1 s in
	r.send("e", `{"temp":50}`, `{"temp":50}`, `{"temp":50}`, `{"temp":50}`, `{"temp":50}`, `{"temp":50}`)
	before := r.summary()
	if before != "e/active:1" {
		t.Fatalf("before the restart: %q", before)
	}
	r.restart()
	// Messages committed while the evaluator was not running are read from
	// the store; the pending condition of d went on holding.
	msgs := []devices.Message{storetest.Telemetry("d", r.now, `{"temp":32}`), storetest.Telemetry("e", r.now, `{"temp":51}`)}
	r.now += 5000
	msgs = append(msgs, storetest.Telemetry("d", r.now, `{"temp":33}`))
	done := storetest.WriteAll(t, r.s, msgs)
	again := r.committed(done[len(done)-1].Seq)
	r.e.catchUp(context.Background(), r.s.LastSeq())
	r.save()
	if got := r.summary(); got != "e/active:2 d/active:1" {
		t.Fatalf("after the restart: %q", got)
	}
	// The same messages again (a feed batch after the catch-up) change nothing.
	r.e.onBatch(context.Background(), again)
	r.save()
	if got := r.summary(); got != "e/active:2 d/active:1" {
		t.Fatalf("after seeing them twice: %q", got)
	}
}

func TestRate_TooManyAndNone(t *testing.T) {
	r := newRig(t)
	r.now = t0 - t0%60_000 // at a window's start
	r.rule(devices.Rule{Name: "chatty", Kind: devices.RuleRate, Device: "d", Interval: devices.Duration(time.Minute), Max: n(3)})
	r.rule(devices.Rule{Name: "silent", Kind: devices.RuleRate, Device: "q", Interval: devices.Duration(time.Minute), Min: n(1)})
	r.act = []devices.Activity{{ID: "q", LastSeen: r.now, Status: "online"}}
	r.tick() // q's first window starts
	r.send("d", `{"a":1}`, `{"a":1}`, `{"a":1}`)
	if got := r.summary(); got != "" {
		t.Fatalf("3 in a window of max 3: %q", got)
	}
	r.send("d", `{"a":1}`, `{"a":1}`)
	if got := r.summary(); got != "d/active:2" {
		t.Fatalf("5 in a window of max 3: %q", got)
	}
	r.now += 60_000
	r.send("d", `{"a":1}`) // the next window: it clears once it ended within bounds
	r.tick()
	if got := r.summary(); got != "d/active:2 q/active:1" {
		t.Fatalf("next window, and q sent nothing for a window: %q", got)
	}
	r.send("q", `{"a":1}`)
	r.now += 60_000
	r.tick()
	if got := r.summary(); got != "d/cleared:2 q/cleared:1" {
		t.Fatalf("windows within bounds: %q", got)
	}
}

func TestInactivityAndStatus(t *testing.T) {
	r := newRig(t)
	r.rule(devices.Rule{Name: "quiet", Kind: devices.RuleInactivity, For: devices.Duration(time.Minute), Severity: devices.SeverityWarning})
	r.rule(devices.Rule{Name: "down", Kind: devices.RuleStatus, DevicePrefix: "gw-", For: devices.Duration(10 * time.Second)})
	r.act = []devices.Activity{{ID: "gw-1", LastSeen: r.now, Status: "offline", StatusAt: r.now}, {ID: "s-1", LastSeen: r.now, Status: "online"}}
	r.now += 5000
	r.tick()
	if got := r.summary(); got != "" {
		t.Fatalf("5 s: %q", got)
	}
	r.now += 10_000
	r.tick()
	if got := r.summary(); got != "gw-1/active:1" {
		t.Fatalf("offline for 15 s: %q", got)
	}
	r.now += 50_000
	r.tick()
	if got := r.summary(); got != "gw-1/active:1 gw-1/active:1 s-1/active:1" {
		t.Fatalf("silent for 65 s: %q", got)
	}
	r.act[0].Status, r.act[0].LastSeen = "online", r.now
	r.tick()
	list := r.alerts(devices.AlertFilter{Status: devices.AlertOpen})
	if len(list) != 1 || list[0].Device != "s-1" || list[0].Rule != "quiet" || list[0].Severity != devices.SeverityWarning {
		t.Fatalf("gw-1 back: open alerts %+v", list)
	}
}

func TestRules_DisabledAndDeletedClear(t *testing.T) {
	r := newRig(t)
	hot := r.rule(devices.Rule{Name: "hot", Metric: "temp", Op: ">", Value: f(30)})
	cold := r.rule(devices.Rule{Name: "cold", Metric: "temp", Op: "<", Value: f(0)})
	r.send("d", `{"temp":40}`)
	r.send("e", `{"temp":-5}`)
	hot.Disabled = true
	if _, err := r.e.UpdateRule(context.Background(), *hot); err != nil {
		t.Fatal(err)
	}
	if err := r.e.DeleteRule(context.Background(), cold.ID); err != nil {
		t.Fatal(err)
	}
	r.e.loadRules(context.Background())
	r.save()
	r.send("d", `{"temp":41}`)
	if open := r.alerts(devices.AlertFilter{Status: devices.AlertOpen}); len(open) != 0 {
		t.Fatalf("open alerts after disabling and deleting their rules: %+v", open)
	}
	// A person's clear while the condition holds: the next trigger raises
	// a new alert.
	hot.Disabled = false
	r.e.UpdateRule(context.Background(), *hot)
	r.e.loadRules(context.Background())
	r.send("d", `{"temp":42}`)
	a := r.alerts(devices.AlertFilter{Status: devices.AlertOpen})[0]
	if _, err := r.e.Ack(context.Background(), a.ID, "alice", "looking"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.e.Clear(context.Background(), a.ID, "alice", ""); err != nil {
		t.Fatal(err)
	}
	r.e.dropAlert(<-r.e.forget)
	r.send("d", `{"temp":43}`)
	if open := r.alerts(devices.AlertFilter{Status: devices.AlertOpen}); len(open) != 1 || open[0].ID == a.ID {
		t.Fatalf("after a clear by hand: %+v", open)
	}
}

// failingSaves is the real store whose first saves fail (a database that
// refuses writes for a while).
type failingSaves struct {
	*sqlite.Store
	mu           sync.Mutex
	fail, calls  int
	lastSavedSeq devices.Seq
}

func (s *failingSaves) SaveAlertStep(ctx context.Context, step *devices.AlertStep) ([]int64, error) {
	s.mu.Lock()
	s.calls++
	failing := s.calls <= s.fail
	s.mu.Unlock()
	if failing {
		return nil, fmt.Errorf("disk I/O error (save %d)", s.calls)
	}
	gone, err := s.Store.SaveAlertStep(ctx, step)
	if err == nil {
		s.mu.Lock()
		s.lastSavedSeq = step.Seq
		s.mu.Unlock()
	}
	return gone, err
}

// TestRun_SaveFailsDuringCatchUp: a save that fails while the evaluator
// catches up from the store makes it load again and go on, and a later
// save records the caught-up position.
func TestRun_SaveFailsDuringCatchUp(t *testing.T) {
	r := newRig(t)
	r.rule(devices.Rule{Name: "hot", Metric: "temp", Op: ">", Value: f(30)})
	r.send("d", `{"temp":20}`)
	var msgs []devices.Message
	for i := 0; i < 10; i++ {
		msgs = append(msgs, storetest.Telemetry("d", r.now, `{"temp":40}`))
		r.now += 1000
	}
	done := storetest.WriteAll(t, r.s, msgs)
	last := done[len(done)-1].Seq
	fs := &failingSaves{Store: r.s, fail: 3}
	e := &Engine{Store: fs, Messages: r.s, Feed: new(devices.Feed), Tick: 5 * time.Millisecond,
		Now: func() time.Time { return time.UnixMilli(r.now) }}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); e.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fs.mu.Lock()
		calls, saved := fs.calls, fs.lastSavedSeq
		fs.mu.Unlock()
		if calls > fs.fail && saved >= last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d saves the saved position is %d, want %d", calls, saved, last)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-stopped
	// Ten readings over the threshold, each counted once: none twice for
	// the steps evaluated again after a failed save.
	if got := r.summary(); got != "d/active:10" {
		t.Fatalf("alerts after the failed saves: %q", got)
	}
}
