package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkAlerts measures what alert rules cost ingestion and how fast a
// webhook follows its trigger: telesim (its own process, one connection per
// device) publishes at a fixed rate to a telehub binary, first without
// rules, then with one threshold rule per device (a rules file) and a
// webhook receiver in this process. Each reading is a random temperature in
// [0, 100); a rule fires above 99.5 and clears below 50, so about one
// reading in 200 raises an alert while none is open. It reports both
// ingest rates and CPU per message, their ratios (same run, same noisy
// machine), the latency from a triggering reading's send time (its "ts")
// to the webhook's arrival, and, for comparison, from publish to a
// WebSocket client (telesim --verify) in the same runs.
//
//	go test -run '^$' -bench Alerts -benchtime 1x ./cmd/telehub
//
// TELEHUB_BENCH_DEVICES (default 1,000), TELEHUB_BENCH_SECONDS (default 15)
// and TELEHUB_BENCH_RATE (per device, default 10) change the load.
func BenchmarkAlerts(b *testing.B) {
	dir := b.TempDir()
	for _, bin := range []struct{ name, pkg string }{{"telehub", "."}, {"telesim", "../telesim"}} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, bin.name), bin.pkg).CombinedOutput(); err != nil {
			b.Fatalf("build %s: %v\n%s", bin.name, err, out)
		}
	}
	devices := benchDevices()
	seconds := envInt("TELEHUB_BENCH_SECONDS", 15)
	rate := envInt("TELEHUB_BENCH_RATE", 10)

	// One rule per device; telesim names them sim-0001 ... (four digits
	// up to 9,999 devices).
	var rules strings.Builder
	rules.WriteString("rules:\n")
	for i := 1; i <= devices; i++ {
		fmt.Fprintf(&rules, "  - {name: hot-%d, device: sim-%04d, metric: temp, op: \">\", value: 99.5, clear: 50, severity: major}\n", i, i)
	}
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(rules.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var lat []float64    // ms, trigger to webhook, "active" events
	var raised []float64 // ms, trigger to the alert's creation (ingestion and evaluation)
	var sent []float64   // ms, the alert's creation to the webhook (its commit, the notifier)
	var deliveries int
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(r.Body)
		var p struct {
			Event string
			Alert struct {
				FirstAt int64 `json:"first_at"`
				Created int64 `json:"created"`
			}
		}
		json.Unmarshal(body, &p)
		mu.Lock()
		deliveries++
		if p.Event == "active" {
			lat = append(lat, float64(now.UnixMicro()-p.Alert.FirstAt*1000)/1000)
			raised = append(raised, float64(p.Alert.Created-p.Alert.FirstAt))
			sent = append(sent, float64(now.UnixMilli()-p.Alert.Created))
		}
		mu.Unlock()
	}))
	defer hook.Close()
	sim := []string{"--profile", "custom", "--template", `{"temp":{{rand 0 100}},"seq":{{seq}},"ts":{{ts}}}`}

	for i := 0; i < b.N; i++ {
		// Both runs verify through a browser-like WebSocket client, so the
		// publish-to-browser latency of the same messages is measured beside
		// the trigger-to-webhook one.
		plain := runFleet(b, dir, "telehub", devices, rate, 10, seconds, true, nil, sim)
		mu.Lock()
		lat, raised, sent, deliveries = nil, nil, nil, 0
		mu.Unlock()
		withRules := runFleet(b, dir, "telehub", devices, rate, 10, seconds, true,
			[]string{"--rules", rulesFile, "--alert-webhook", hook.URL}, sim)
		time.Sleep(2 * time.Second) // the last webhooks
		mu.Lock()
		slices.Sort(lat)
		slices.Sort(raised)
		slices.Sort(sent)
		pct := func(xs []float64, q float64) float64 {
			if len(xs) == 0 {
				return 0
			}
			return xs[min(len(xs)-1, int(q*float64(len(xs))))]
		}
		p := func(q float64) float64 { return pct(lat, q) }
		b.ReportMetric(plain.rate, "msg/s")
		b.ReportMetric(withRules.rate, "rules-msg/s")
		b.ReportMetric(withRules.rate/plain.rate, "rate-ratio")
		b.ReportMetric(plain.cpuPerMsg, "cpu-µs/msg")
		b.ReportMetric(withRules.cpuPerMsg, "rules-cpu-µs/msg")
		b.ReportMetric(p(0.5), "webhook-p50-ms")
		b.ReportMetric(p(0.99), "webhook-p99-ms")
		b.Logf("%d devices at %d msg/s each: without rules %.0f msg/s, %.1f µs CPU/msg; with %d rules %.0f msg/s (ratio %.3f), %.1f µs CPU/msg (ratio %.2f); %d alerts raised, %d webhooks; trigger to webhook p50 %.1f ms, p99 %.1f ms, max %.1f ms (trigger to raised, ingestion and evaluation: p50 %.0f ms, p99 %.0f ms; raised to webhook: p50 %.0f ms, p99 %.0f ms); publish to browser p50 %.1f / p99 %.1f ms without rules, %.1f / %.1f ms with",
			devices, rate, plain.rate, plain.cpuPerMsg, devices, withRules.rate, withRules.rate/plain.rate, withRules.cpuPerMsg, withRules.cpuPerMsg/plain.cpuPerMsg,
			len(lat), deliveries, p(0.5), p(0.99), p(1), pct(raised, 0.5), pct(raised, 0.99), pct(sent, 0.5), pct(sent, 0.99), plain.e2eP50, plain.e2eP99, withRules.e2eP50, withRules.e2eP99)
		b.ReportMetric(withRules.e2eP99, "e2e-p99-ms")
		mu.Unlock()
	}
}
