package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/devices/alerts"
)

// hookCall is one webhook request as a receiver saw it.
type hookCall struct {
	Key, Event, Rule, Device, Status string
	SignatureOK                      bool
	At                               time.Time
}

// hookServer is a webhook receiver: it records every request and answers
// with status (200 by default; settable while running).
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []hookCall
	status int
	secret func() []byte
}

func newHookServer(t *testing.T, secret func() []byte) *hookServer {
	h := &hookServer{status: http.StatusOK, secret: secret}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p struct {
			Event string `json:"event"`
			Key   string `json:"key"`
			Alert struct {
				Rule   string `json:"rule"`
				Device string `json:"device"`
				Status string `json:"status"`
			} `json:"alert"`
		}
		json.Unmarshal(body, &p)
		h.mu.Lock()
		defer h.mu.Unlock()
		ok := h.secret != nil && alerts.Verify(h.secret(), r.Header.Get("X-Telehub-Signature"), body, time.Now(), time.Minute)
		if p.Key != r.Header.Get("Idempotency-Key") {
			ok = false
		}
		h.calls = append(h.calls, hookCall{Key: p.Key, Event: p.Event, Rule: p.Alert.Rule, Device: p.Alert.Device, Status: p.Alert.Status, SignatureOK: ok, At: time.Now()})
		w.WriteHeader(h.status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) setStatus(code int) {
	h.mu.Lock()
	h.status = code
	h.mu.Unlock()
}

func (h *hookServer) list() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookCall(nil), h.calls...)
}

// waitEvent waits for a request about rule and device with event.
func (h *hookServer) waitEvent(t *testing.T, d time.Duration, rule, device, event string) hookCall {
	t.Helper()
	var found hookCall
	checkFor(t, d, func() error {
		for _, c := range h.list() {
			if c.Rule == rule && c.Device == device && c.Event == event {
				found = c
				return nil
			}
		}
		return fmt.Errorf("no %s webhook for rule %s, device %s; got %+v", event, rule, device, h.list())
	})
	if !found.SignatureOK {
		t.Fatalf("webhook %+v: bad signature or idempotency key", found)
	}
	return found
}

func postRule(t *testing.T, base, body string) int64 {
	t.Helper()
	code, resp := request(t, "POST", base+"/api/v1/rules", "", body)
	if code != http.StatusCreated {
		t.Fatalf("POST /rules %s: %d %s", body, code, resp)
	}
	var r struct{ ID int64 }
	json.Unmarshal([]byte(resp), &r)
	return r.ID
}

type alertJSON struct {
	ID         int64  `json:"id"`
	Rule       string `json:"rule"`
	Device     string `json:"device"`
	Status     string `json:"status"`
	Count      int64  `json:"count"`
	AckedBy    string `json:"acked_by"`
	History    []struct{ Status string }
	Deliveries []struct {
		Status   string `json:"status"`
		Attempts int    `json:"attempts"`
		Key      string `json:"key"`
	}
}

func listAlerts(t *testing.T, base, query string) []alertJSON {
	t.Helper()
	var out struct{ Alerts []alertJSON }
	if code := getJSON(t, base+"/api/v1/alerts?"+query, &out); code != http.StatusOK {
		t.Fatalf("GET /alerts?%s: %d", query, code)
	}
	return out.Alerts
}

// TestAlerts_EveryKindOverMQTT: each kind of rule raises and clears an
// alert over the real pipeline (MQTT publish or connection, the store, the
// evaluator, the webhook), with signed requests, live frames, and an
// acknowledgement through the API.
func TestAlerts_EveryKindOverMQTT(t *testing.T) {
	var m *Main
	hook := newHookServer(t, func() []byte { return []byte(m.webhookSecretValue) })
	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rulesFile, []byte("rules:\n  - name: silent\n    kind: inactivity\n    device: quiet-1\n    for: 1s\n    severity: warning\n"), 0o600)
	m = MustRunMain(t, func(c *Config) { c.AlertWebhooks = []string{hook.URL}; c.Rules = rulesFile })
	base := m.HTTP.URL()
	postRule(t, base, `{"name":"hot","device_prefix":"oven-","metric":"temp","op":">","value":30,"clear":28,"severity":"critical"}`)
	postRule(t, base, `{"name":"down","kind":"status","device":"gw-1"}`)
	postRule(t, base, `{"name":"chatty","kind":"rate","device":"chat-1","interval":"1s","max":5}`)
	ws := dialWS(t, base, "")

	// Threshold: hot, hovering in the hysteresis band (no new alert), cool.
	oven := mqttConnect(t, m.Broker.URL(), "oven-1")
	pub := func(device, payload string) {
		t.Helper()
		if tok := oven.Publish("devices/"+device+"/telemetry", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	pub("oven-1", `{"temp":35}`)
	hook.waitEvent(t, 10*time.Second, "hot", "oven-1", "active")
	pub("oven-1", `{"temp":29}`)
	pub("oven-1", `{"temp":31}`)
	pub("oven-1", `{"temp":20}`)
	hook.waitEvent(t, 10*time.Second, "hot", "oven-1", "cleared")
	if list := listAlerts(t, base, "device=oven-1"); len(list) != 1 || list[0].Count != 2 || list[0].Status != "cleared" {
		t.Fatalf("oven-1's alerts: %+v, want one, cleared, with 2 triggers", list)
	}

	// Live: the page gets alert frames without a reload.
	for seen := map[string]bool{}; !seen["active"] || !seen["cleared"]; {
		select {
		case f := <-ws.frames:
			var a struct{ Rule, Status string }
			if f.Type == "alert" && json.Unmarshal(f.Alert, &a) == nil && a.Rule == "hot" {
				seen[a.Status] = true
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("alert frames seen: %v, want active and cleared", seen)
		}
	}

	// Status: a device that goes away, then comes back.
	gw := mqttConnect(t, m.Broker.URL(), "gw-1")
	publishN(t, gw, "gw-1", 1) // the connection is the device's once it publishes as it
	gw.Disconnect(0)
	hook.waitEvent(t, 10*time.Second, "down", "gw-1", "active")
	publishN(t, mqttConnect(t, m.Broker.URL(), "gw-1"), "gw-1", 1)
	hook.waitEvent(t, 10*time.Second, "down", "gw-1", "cleared")

	// Inactivity (from the rules file): one message, then silence.
	pub("quiet-1", `{"x":1}`)
	hook.waitEvent(t, 10*time.Second, "silent", "quiet-1", "active")
	pub("quiet-1", `{"x":2}`)
	hook.waitEvent(t, 10*time.Second, "silent", "quiet-1", "cleared")

	// Rate: a burst above 5 a second, then a quiet window. The burst goes
	// out at once: even split over three windows, one has more than 5.
	var burst []paho.Token
	for i := 0; i < 20; i++ {
		burst = append(burst, oven.Publish("devices/chat-1/telemetry", 1, false, fmt.Sprintf(`{"i":%d}`, i)))
	}
	for _, tok := range burst {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	hook.waitEvent(t, 10*time.Second, "chatty", "chat-1", "active")
	hook.waitEvent(t, 10*time.Second, "chatty", "chat-1", "cleared")

	// Acknowledge an open alert through the API, as a person would.
	pub("oven-1", `{"temp":40}`)
	var open []alertJSON
	checkFor(t, 10*time.Second, func() error {
		if open = listAlerts(t, base, "status=active&device=oven-1"); len(open) != 1 {
			return fmt.Errorf("active alerts of oven-1: %+v", open)
		}
		return nil
	})
	code, body := request(t, "POST", fmt.Sprintf("%s/api/v1/alerts/%d/ack", base, open[0].ID), "", `{"by":"alice","note":"opening the door"}`)
	if code != http.StatusOK || !strings.Contains(body, `"status":"acknowledged"`) {
		t.Fatalf("ack: %d %s", code, body)
	}
	if code, _ := request(t, "POST", fmt.Sprintf("%s/api/v1/alerts/%d/ack", base, open[0].ID), "", ""); code != http.StatusConflict {
		t.Fatalf("a second ack: %d, want 409", code)
	}
	hook.waitEvent(t, 10*time.Second, "hot", "oven-1", "acknowledged")
	pub("oven-1", `{"temp":10}`)
	hook.waitEvent(t, 10*time.Second, "hot", "oven-1", "cleared")
	var full alertJSON
	checkFor(t, 10*time.Second, func() error {
		getJSON(t, fmt.Sprintf("%s/api/v1/alerts/%d", base, open[0].ID), &full)
		if len(full.History) != 3 || full.AckedBy != "alice" || len(full.Deliveries) != 3 || full.Deliveries[2].Status != "delivered" {
			return fmt.Errorf("alert %+v", full)
		}
		return nil
	})

	// Metrics: evaluations, alerts by status and severity, webhook attempts.
	_, metrics := request(t, "GET", base+"/metrics", "", "")
	for _, want := range []string{`telehub_alerts{severity="critical",status="cleared"} 2`, "telehub_alert_rules_evaluated_total",
		`telehub_alert_webhook_seconds_count{result="delivered"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Rules of the file are read-only through the API; bad rules are 400.
	var rules struct {
		Rules []struct {
			ID     int64
			Name   string
			Source string
		}
	}
	getJSON(t, base+"/api/v1/rules", &rules)
	for _, r := range rules.Rules {
		if r.Name == "silent" {
			if r.Source != "file" {
				t.Fatalf("rule silent: source %q", r.Source)
			}
			if code, _ := request(t, "DELETE", fmt.Sprintf("%s/api/v1/rules/%d", base, r.ID), "", ""); code != http.StatusConflict {
				t.Fatalf("deleting a rule of the file: %d, want 409", code)
			}
		}
	}
	for _, bad := range []string{`{"name":"x","metric":"t","op":"=>","value":1}`, `{"name":"x","kind":"rate","interval":"1s"}`, `{"name":"x","kind":"status","colour":"red"}`, `{"name":"","kind":"status"}`, `[]`} {
		if code, body := request(t, "POST", base+"/api/v1/rules", "", bad); code != http.StatusBadRequest {
			t.Errorf("POST /rules %s: %d %s, want 400", bad, code, body)
		}
	}
	if code, _ := request(t, "POST", base+"/api/v1/rules", "", `{"name":"hot","kind":"status"}`); code != http.StatusConflict {
		t.Errorf("a rule named like another: %d, want 409", code)
	}
}

// TestAlerts_FailingReceiversDoNotSlowIngest: with one webhook that hangs
// and one that answers 500, a rule that fires on every device goes on
// raising and delivering to the healthy receiver, and ingestion keeps up.
func TestAlerts_FailingReceiversDoNotSlowIngest(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) }))
	defer failing.Close()
	var m *Main
	good := newHookServer(t, func() []byte { return []byte(m.webhookSecretValue) })
	m = MustRunMain(t, func(c *Config) { c.AlertWebhooks = []string{hang.URL, failing.URL, good.URL} })
	postRule(t, m.HTTP.URL(), `{"name":"hot","metric":"temp","op":">","value":30}`)
	const devicesN, each = 20, 100
	var wg sync.WaitGroup
	start := time.Now()
	for d := 0; d < devicesN; d++ {
		c := mqttConnect(t, m.Broker.URL(), fmt.Sprintf("dev-%d", d))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n := publishN(t, c, fmt.Sprintf("dev-%d", d), each); n != each {
				t.Errorf("%d of %d acknowledged", n, each)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	// publishN's temperatures run 0.5 .. 39.5: every device crosses 30.
	checkFor(t, 20*time.Second, func() error {
		got := map[string]bool{}
		for _, c := range good.list() {
			if c.Event == "active" {
				got[c.Device] = true
			}
		}
		if len(got) < devicesN {
			return fmt.Errorf("the healthy receiver got alerts of %d devices, want %d", len(got), devicesN)
		}
		return nil
	})
	t.Logf("%d messages stored in %v with a hanging and a failing receiver", devicesN*each, took)
}

// TestAlerts_KillBetweenTriggerAndWebhook: the hub is killed (SIGKILL)
// after an alert was raised and before its webhook was accepted; after a
// restart the webhook arrives with the same idempotency key, and the alert
// is neither lost nor raised twice.
func TestAlerts_KillBetweenTriggerAndWebhook(t *testing.T) {
	hook := newHookServer(t, func() []byte { return []byte("kill-test-secret-0123") })
	hook.setStatus(http.StatusServiceUnavailable) // the receiver is down while the alert fires
	db := filepath.Join(t.TempDir(), "telehub.db")
	args := []string{"--db", db, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--alert-webhook", hook.URL, "--alert-webhook-secret", "kill-test-secret-0123"}
	h := startHubProcess(t, args...)
	postRule(t, h.httpURL, `{"name":"hot","metric":"temp","op":">","value":30}`)
	dev := mqttConnect(t, "tcp://"+h.mqttAddr, "boiler")
	if tok := dev.Publish("devices/boiler/telemetry", 1, false, `{"temp":90}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	checkFor(t, 10*time.Second, func() error {
		if len(hook.list()) == 0 {
			return fmt.Errorf("no attempt yet")
		}
		return nil
	})
	first := hook.list()[0]
	h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.exited
	dev.Disconnect(0)

	hook.setStatus(http.StatusOK)
	h2 := startHubProcess(t, args...)
	checkFor(t, 20*time.Second, func() error {
		for _, c := range hook.list() {
			if c.Key == first.Key && c.At.After(first.At) && c.SignatureOK {
				return nil
			}
		}
		return fmt.Errorf("no retry with key %s after the restart", first.Key)
	})
	// The device reports more hot readings: the same alert repeats.
	dev2 := mqttConnect(t, "tcp://"+h2.mqttAddr, "boiler")
	if tok := dev2.Publish("devices/boiler/telemetry", 1, false, `{"temp":91}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	checkFor(t, 10*time.Second, func() error {
		list := listAlerts(t, h2.httpURL, "")
		if len(list) != 1 || list[0].Count != 2 || list[0].Status != "active" {
			return fmt.Errorf("alerts %+v, want one active with 2 triggers", list)
		}
		return nil
	})
	var full alertJSON
	getJSON(t, fmt.Sprintf("%s/api/v1/alerts/%d", h2.httpURL, listAlerts(t, h2.httpURL, "")[0].ID), &full)
	// The first hub's attempt may or may not have been recorded before the
	// kill: the receiver saw it, the database need not have.
	if len(full.Deliveries) != 1 || full.Deliveries[0].Status != "delivered" || full.Deliveries[0].Key != first.Key {
		t.Fatalf("deliveries %+v, want one, delivered, key %s", full.Deliveries, first.Key)
	}
}

// TestAlerts_RulesFileReloadsOnSIGHUP: the hub process reads its rules file
// again on SIGHUP; a file with an error keeps the rules it had.
func TestAlerts_RulesFileReloadsOnSIGHUP(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rules.yaml")
	write := func(body string) {
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("rules:\n  - {name: a, kind: status}\n  - {name: b, kind: inactivity, for: 1m}\n")
	h := startHubProcess(t, "--db", filepath.Join(t.TempDir(), "telehub.db"), "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--rules", file)
	names := func() string {
		var r struct{ Rules []struct{ Name string } }
		getJSON(t, h.httpURL+"/api/v1/rules", &r)
		var out []string
		for _, x := range r.Rules {
			out = append(out, x.Name)
		}
		return strings.Join(out, ",")
	}
	if got := names(); got != "a,b" {
		t.Fatalf("rules at start: %q", got)
	}
	write("rules:\n  - {name: b, kind: inactivity, for: 5m}\n  - {name: c, metric: temp, op: '<', value: 0}\n")
	h.cmd.Process.Signal(syscall.SIGHUP)
	checkFor(t, 10*time.Second, func() error {
		if got := names(); got != "b,c" {
			return fmt.Errorf("rules after SIGHUP: %q", got)
		}
		return nil
	})
	write("rules:\n  - {name: d, metric: temp, op: '=<', value: 0}\n")
	h.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	if got := names(); got != "b,c" {
		t.Fatalf("a bad file changed the rules: %q", got)
	}
}
