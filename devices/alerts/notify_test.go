package alerts

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
)

// TestNotifier_RetriesAndIsolatesReceivers: a receiver that answers 500
// gets the delivery again (same key) until it answers 200; one that hangs
// holds up neither the others nor the evaluator; every attempt is recorded.
func TestNotifier_RetriesAndIsolatesReceivers(t *testing.T) {
	secret := []byte("s3cret")
	var flaky atomic.Int32
	var mu sync.Mutex
	keys := map[string][]string{}
	record := func(name string, r *http.Request) bool {
		body, _ := io.ReadAll(r.Body)
		if !Verify(secret, r.Header.Get("X-Telehub-Signature"), body, time.Now(), time.Minute) {
			t.Errorf("%s: bad signature %q", name, r.Header.Get("X-Telehub-Signature"))
		}
		mu.Lock()
		keys[name] = append(keys[name], r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		return true
	}
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { record("ok", r) }))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record("flaky", r)
		if flaky.Add(1) < 3 {
			http.Error(w, "down", http.StatusInternalServerError)
		}
	}))
	defer bad.Close()
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)

	r := newRig(t)
	r.now = time.Now().UnixMilli() // deliveries are retried by the real clock
	r.e.Webhooks = []string{hang.URL, bad.URL, ok.URL}
	r.e.rules.Store(newRuleSet(nil, r.e.Webhooks))
	r.rule(devices.Rule{Name: "hot", Metric: "temp", Op: ">", Value: f(30)})
	n := &Notifier{Store: r.s, Secret: secret, Timeout: 30 * time.Second, MaxBackoff: 50 * time.Millisecond}
	n.init()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	defer func() { cancel(); <-done }()

	r.send("a", `{"temp":31}`)
	n.Wake()
	r.send("b", `{"temp":32}`) // the evaluator goes on while a receiver hangs
	n.Wake()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got, flakyGot := len(keys["ok"]), len(keys["flaky"])
		mu.Unlock()
		if got == 2 && flakyGot == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ok got %d, flaky %d attempts; want 2 and 4 (two 500s, then both)", got, flakyGot)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	if k := keys["flaky"]; k[0] != k[1] || k[0] != keys["ok"][0] {
		t.Errorf("keys: flaky %v, ok %v: a retry and every receiver of a change share the key", k, keys["ok"])
	}
	mu.Unlock()
	// The attempts are recorded after the requests, a batch at a time.
	a := r.alerts(devices.AlertFilter{Device: "a"})[0]
	deadline = time.Now().Add(10 * time.Second)
	for {
		full, _ := r.s.Alert(context.Background(), a.ID)
		var problems []string
		for _, d := range full.Deliveries {
			switch d.URL {
			case bad.URL:
				if d.Status != devices.DeliveryDelivered || d.Attempts != 3 || len(d.Log) != 3 || d.Log[0].Code != 500 {
					problems = append(problems, fmt.Sprintf("flaky delivery = %+v", d))
				}
			case ok.URL:
				if d.Status != devices.DeliveryDelivered || d.Attempts != 1 {
					problems = append(problems, fmt.Sprintf("ok delivery = %+v", d))
				}
			case hang.URL:
				if d.Status != devices.DeliveryPending || d.Attempts != 0 {
					problems = append(problems, fmt.Sprintf("hanging delivery = %+v", d))
				}
			}
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(strings.Join(problems, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSign_Verify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	h := Sign([]byte("k"), now.Unix(), []byte(`{"a":1}`))
	if !Verify([]byte("k"), h, []byte(`{"a":1}`), now, time.Minute) {
		t.Fatal("own signature refused")
	}
	for _, c := range []struct {
		key, body string
		at        time.Time
	}{{"x", `{"a":1}`, now}, {"k", `{"a":2}`, now}, {"k", `{"a":1}`, now.Add(time.Hour)}} {
		if Verify([]byte(c.key), h, []byte(c.body), c.at, time.Minute) {
			t.Errorf("accepted with key %q, body %s at %v", c.key, c.body, c.at)
		}
	}
}
