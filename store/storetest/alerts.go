package storetest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

func f64(v float64) *float64 { return &v }

func testAlertRules(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	hot := devices.Rule{Name: "hot", Device: "kitchen", Metric: "temp", Op: ">", Value: f64(30), Clear: f64(28), For: devices.Duration(60e9), Severity: devices.SeverityMajor, Created: t0, Updated: t0}
	r, err := s.CreateRule(ctx, hot)
	if err != nil || r.ID <= 0 || r.Kind != devices.RuleThreshold || r.Source != devices.RuleFromAPI {
		t.Fatalf("CreateRule = %+v, %v", r, err)
	}
	if _, err := s.CreateRule(ctx, hot); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("a second rule named hot: %v, want ErrConflict", err)
	}
	if _, err := s.CreateRule(ctx, devices.Rule{Name: "bad", Metric: "temp", Op: "=>", Value: f64(1)}); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("a rule with op =>: %v, want ErrInvalid", err)
	}
	got, err := s.Rule(ctx, r.ID)
	if err != nil || got.Name != "hot" || *got.Clear != 28 || got.For != devices.Duration(60e9) || got.Created != t0 {
		t.Fatalf("Rule = %+v, %v", got, err)
	}
	got.Value, got.Updated = f64(35), t0+1
	if _, err := s.UpdateRule(ctx, *got); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.Rule(ctx, r.ID); *got.Value != 35 || got.Updated != t0+1 || got.Created != t0 {
		t.Fatalf("after UpdateRule: %+v", got)
	}
	if _, err := s.UpdateRule(ctx, devices.Rule{ID: 99999, Name: "x", Kind: devices.RuleStatus}); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("UpdateRule of an unknown rule: %v", err)
	}

	// The rules file's rules: added, changed, removed by name; an API
	// rule's name is refused.
	file := []devices.Rule{{Name: "quiet", Kind: devices.RuleInactivity, For: devices.Duration(300e9)}, {Name: "down", Kind: devices.RuleStatus}}
	for i := range file {
		if err := file[i].Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if a, c, d, err := s.SyncFileRules(ctx, file, t0); err != nil || a != 2 || c != 0 || d != 0 {
		t.Fatalf("SyncFileRules = %d %d %d %v, want 2 added", a, c, d, err)
	}
	if a, c, d, err := s.SyncFileRules(ctx, file, t0+5); err != nil || a+c+d != 0 {
		t.Fatalf("the same file again = %d %d %d %v, want no change", a, c, d, err)
	}
	file[0].For = devices.Duration(600e9)
	if a, c, d, err := s.SyncFileRules(ctx, file[:1], t0+10); err != nil || a != 0 || c != 1 || d != 1 {
		t.Fatalf("one changed, one gone = %d %d %d %v", a, c, d, err)
	}
	if _, _, _, err := s.SyncFileRules(ctx, []devices.Rule{hot}, t0+20); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("a file rule named like an API rule: %v, want ErrConflict", err)
	}
	list, err := s.Rules(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "hot" || list[1].Name != "quiet" || list[1].Source != devices.RuleFromFile || list[1].For != devices.Duration(600e9) {
		t.Fatalf("Rules = %+v, %v", list, err)
	}
	if err := s.DeleteRule(ctx, r.ID, t0+30); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRule(ctx, r.ID, t0+30); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
}

func testAlertSteps(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	r, err := s.CreateRule(ctx, devices.Rule{Name: "hot", Metric: "temp", Op: ">", Value: f64(30), Created: t0, Updated: t0})
	if err != nil {
		t.Fatal(err)
	}
	hooks := func(int64) []string { return []string{"http://127.0.0.1:1/a", "http://127.0.0.1:1/b"} }
	payload := func(a *devices.Alert, ev devices.AlertEvent, key string) []byte {
		return []byte(`{"alert":` + itoa(a.ID) + `,"event":"` + string(ev.Status) + `","key":"` + key + `"}`)
	}
	st, err := s.LoadAlertEngine(ctx)
	if err != nil || st.Seq != 0 || len(st.Open) != 0 || len(st.States) != 0 {
		t.Fatalf("a fresh database's evaluator state: %+v, %v", st, err)
	}
	raise := func(device string, v float64) *devices.Alert {
		return &devices.Alert{RuleID: r.ID, Rule: r.Name, Kind: r.Kind, Device: device, Severity: r.Severity, Status: devices.AlertActive,
			Message: "m", Metric: "temp", FirstValue: f64(v), FirstAt: t0, LastValue: f64(v), LastAt: t0, Count: 1, Created: t0, Updated: t0}
	}
	a, b := raise("a", 31), raise("b", 32)
	step := &devices.AlertStep{Seq: 10, Raised: []*devices.Alert{a, b}, Webhooks: hooks, Payload: payload,
		States: []devices.RuleState{{Rule: r.ID, Device: "c", Since: t0, Value: f64(33)}}}
	if gone, err := s.SaveAlertStep(ctx, step); err != nil || len(gone) != 0 || a.ID <= 0 || b.ID <= a.ID {
		t.Fatalf("SaveAlertStep = %v %v, ids %d %d", gone, err, a.ID, b.ID)
	}
	// One open alert per (rule, device): a second one is refused, and the
	// step with it saves nothing.
	if _, err := s.SaveAlertStep(ctx, &devices.AlertStep{Seq: 11, Raised: []*devices.Alert{raise("a", 40)}}); err == nil {
		t.Fatal("a second open alert of the same rule and device was saved")
	}
	st, err = s.LoadAlertEngine(ctx)
	if err != nil || st.Seq != 10 || len(st.Open) != 2 || len(st.States) != 1 || st.States[0].Device != "c" || *st.States[0].Value != 33 {
		t.Fatalf("LoadAlertEngine = %+v, %v", st, err)
	}
	// Updates, a clear, a state dropped.
	a.Count, a.LastValue, a.LastAt = 3, f64(35), t0+2000
	b.Status, b.ClearedBy, b.ClearedAt = devices.AlertCleared, "hub", t0+3000
	if _, err := s.SaveAlertStep(ctx, &devices.AlertStep{Seq: 20, Updated: []*devices.Alert{a}, Cleared: []*devices.Alert{b}, Webhooks: hooks, Payload: payload,
		Dropped: []devices.RuleState{{Rule: r.ID, Device: "c"}}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Alert(ctx, a.ID)
	if err != nil || got.Count != 3 || *got.LastValue != 35 || *got.FirstValue != 31 || got.Status != devices.AlertActive || len(got.History) != 1 {
		t.Fatalf("Alert = %+v, %v", got, err)
	}
	// Acknowledged, then cleared by hand; the evaluator's next update of it
	// finds it gone.
	if _, err := s.AckAlert(ctx, a.ID, "alice", "on it", t0+4000, hooks, payload); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AckAlert(ctx, a.ID, "alice", "", t0+4001, hooks, payload); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("a second ack: %v, want ErrConflict", err)
	}
	if _, err := s.AckAlert(ctx, 99999, "alice", "", t0, hooks, payload); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("ack of an unknown alert: %v", err)
	}
	c, err := s.ClearAlert(ctx, a.ID, "bob", "fixed", t0+5000, hooks, payload)
	if err != nil || c.Status != devices.AlertCleared || c.AckedBy != "alice" || c.ClearedBy != "bob" {
		t.Fatalf("ClearAlert = %+v, %v", c, err)
	}
	a.Count = 4
	if gone, err := s.SaveAlertStep(ctx, &devices.AlertStep{Seq: 21, Updated: []*devices.Alert{a}}); err != nil || len(gone) != 1 || gone[0] != a.ID {
		t.Fatalf("updating a cleared alert: gone %v, %v", gone, err)
	}
	got, _ = s.Alert(ctx, a.ID)
	var hist []string
	for _, ev := range got.History {
		hist = append(hist, string(ev.Status)+":"+ev.By)
	}
	if strings.Join(hist, " ") != "active:hub acknowledged:alice cleared:bob" || got.Count != 3 || got.AckNote != "on it" {
		t.Fatalf("history %v, count %d, note %q", hist, got.Count, got.AckNote)
	}
	// Three changes of a, each to two receivers, with one key per change.
	if len(got.Deliveries) != 6 || got.Deliveries[0].Key != got.Deliveries[1].Key || got.Deliveries[0].Key == got.Deliveries[2].Key {
		t.Fatalf("deliveries = %+v", got.Deliveries)
	}
	// A new alert for (rule, a) now that the old one is cleared.
	a2 := raise("a", 50)
	if _, err := s.SaveAlertStep(ctx, &devices.AlertStep{Seq: 30, Raised: []*devices.Alert{a2}}); err != nil || a2.ID <= b.ID {
		t.Fatalf("raising again after a clear: %v (id %d)", err, a2.ID)
	}

	// Lists: newest first, by status, severity and device, by keyset.
	open, err := s.ListAlerts(ctx, devices.AlertFilter{Status: devices.AlertOpen, Limit: 10})
	if err != nil || len(open) != 1 || open[0].ID != a2.ID {
		t.Fatalf("open alerts = %+v, %v", open, err)
	}
	all, _ := s.ListAlerts(ctx, devices.AlertFilter{Limit: 10})
	if len(all) != 3 || all[0].ID != a2.ID || all[2].ID != a.ID {
		t.Fatalf("all alerts = %+v", all)
	}
	page, _ := s.ListAlerts(ctx, devices.AlertFilter{Device: "a", Before: a2.ID, Limit: 10})
	if len(page) != 1 || page[0].ID != a.ID {
		t.Fatalf("device a before %d = %+v", a2.ID, page)
	}
	if none, _ := s.ListAlerts(ctx, devices.AlertFilter{Severity: devices.SeverityCritical, Limit: 10}); len(none) != 0 {
		t.Fatalf("critical alerts = %+v", none)
	}
	if _, err := s.ListAlerts(ctx, devices.AlertFilter{}); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("limit 0: %v", err)
	}
	counts, err := s.AlertCounts(ctx)
	if err != nil || counts[devices.AlertCleared][devices.SeverityMajor] != 2 || counts[devices.AlertActive][devices.SeverityMajor] != 1 {
		t.Fatalf("AlertCounts = %v, %v", counts, err)
	}

	// The outbox: due by receiver, oldest first; attempts recorded.
	urls, err := s.DueReceivers(ctx, t0+10_000, 10)
	if err != nil || len(urls) != 2 {
		t.Fatalf("DueReceivers = %v, %v", urls, err)
	}
	due, err := s.DueDeliveries(ctx, "http://127.0.0.1:1/a", t0+10_000, 100)
	if err != nil || len(due) != 5 || string(due[0].Payload) == "" || due[0].Event != devices.AlertActive {
		t.Fatalf("DueDeliveries = %+v, %v", due, err)
	}
	if err := s.RecordDeliveries(ctx, []devices.DeliveryResult{
		{ID: due[0].ID, Attempt: devices.DeliveryAttempt{At: t0 + 6000, Code: 500, Error: "500 Internal Server Error", Millis: 3}, Status: devices.DeliveryPending, NextAt: t0 + 20_000},
		{ID: due[1].ID, Attempt: devices.DeliveryAttempt{At: t0 + 6000, Code: 200, Millis: 2}, Status: devices.DeliveryDelivered},
	}); err != nil {
		t.Fatal(err)
	}
	if due, _ = s.DueDeliveries(ctx, "http://127.0.0.1:1/a", t0+10_000, 100); len(due) != 3 {
		t.Fatalf("after a retry and a success, %d due, want 3", len(due))
	}
	if due, _ = s.DueDeliveries(ctx, "http://127.0.0.1:1/a", t0+20_000, 100); len(due) != 4 {
		t.Fatalf("once the retry is due, %d due, want 4", len(due))
	}
	got, _ = s.Alert(ctx, a.ID)
	if d := got.Deliveries[0]; d.Attempts != 1 || len(d.Log) != 1 || d.Log[0].Code != 500 || d.LastError == "" {
		t.Fatalf("the failed delivery reads %+v", d)
	}

	// Settings.
	if v, err := s.Setting(ctx, "x"); err != nil || v != "" {
		t.Fatalf("unset setting = %q, %v", v, err)
	}
	if err := s.SetSetting(ctx, "x", "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSetting(ctx, "x", "2"); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Setting(ctx, "x"); v != "2" {
		t.Fatalf("setting = %q", v)
	}

	// Pruning: the two alerts cleared before t0+6000 go, with their
	// history and deliveries; the open one stays.
	if n, err := s.PruneAlerts(ctx, t0+6000, 1000); err != nil || n != 2 {
		t.Fatalf("PruneAlerts = %d, %v; want 2", n, err)
	}
	if _, err := s.Alert(ctx, a.ID); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("a pruned alert: %v", err)
	}
	if left, _ := s.ListAlerts(ctx, devices.AlertFilter{Limit: 10}); len(left) != 1 || left[0].ID != a2.ID {
		t.Fatalf("after pruning: %+v", left)
	}
	if urls, _ := s.DueReceivers(ctx, t0+100_000, 10); len(urls) != 0 {
		t.Fatalf("deliveries of pruned alerts are due: %v", urls)
	}

	// Deleting the rule clears its open alerts.
	if err := s.DeleteRule(ctx, r.ID, t0+50_000); err != nil {
		t.Fatal(err)
	}
	if open, _ := s.ListAlerts(ctx, devices.AlertFilter{Status: devices.AlertOpen, Limit: 10}); len(open) != 0 {
		t.Fatalf("after the rule was deleted, open alerts = %+v", open)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
