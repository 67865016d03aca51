package dashboard_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telehub/telehub/dashboard"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/alerts"
	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/sqlite"
)

// FuzzHandlers sends every GET route of the API an arbitrary device id and
// query string: no input may panic a handler (a recovered panic would show
// as a 500) or earn a 5xx; the caller's mistakes are 4xx.
//
//	go test -run '^$' -fuzz FuzzHandlers -fuzztime 60s ./dashboard
func FuzzHandlers(f *testing.F) {
	s, st := MustOpenServer(f)
	st.commit("kitchen", 3)
	app := dashboard.App(s)
	for _, seed := range []struct{ id, query string }{
		{"kitchen", "metrics=t&from=-9223372036854775808&to=9223372036854775807&max_points=2"},
		{"kitchen", "metrics=t&interval=366d&agg=last&counts=1"},
		{"kitchen", "limit=10000&order=asc&time=received&from=0&to=0&cursor=eyJ4IjoxfQ"},
		{"kitchen", "format=csv&metrics=,,,&device=%00"},
		{"é", "since=-1&batch=2"},
		{"..", ""},
		{"", "prefix=\xff&limit=-1"},
	} {
		f.Add(seed.id, seed.query)
	}
	paths := []string{"/api/v1/devices/%s", "/api/v1/devices/%s/messages", "/api/v1/devices/%s/series", "/api/v1/devices/%s/latest",
		"/api/v1/devices/%s/keys", "/api/v1/devices/%s/events", "/api/v1/devices", "/api/v1/export", "/api/v1/metrics/keys"}
	f.Fuzz(func(t *testing.T, id, query string) {
		for _, p := range paths {
			target := strings.Replace(p, "%s", url.PathEscape(id), 1) + "?" + query
			req, err := http.NewRequest("GET", "http://127.0.0.1"+target, nil)
			if err != nil {
				continue // not a URL at all
			}
			start := time.Now()
			resp, err := app.Test(req, -1)
			if err != nil {
				continue // a request Fiber cannot even read (an invalid URL)
			}
			if d := time.Since(start); d > 5*time.Second { // with the in-memory store, nothing should take long
				t.Fatalf("GET %s took %v", target, d)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 500 && resp.StatusCode != 501 {
				t.Fatalf("GET %s: %d %s", target, resp.StatusCode, body)
			}
		}
	})
}

// FuzzDownlinkHandlers sends the command and attribute routes arbitrary
// device ids, command ids, queries and bodies, against a real store: no
// input may panic a handler or earn a 5xx, and nothing may take long.
//
//	go test -run '^$' -fuzz FuzzDownlinkHandlers -fuzztime 60s ./dashboard
func FuzzDownlinkHandlers(f *testing.F) {
	st, err := sqlite.Open(filepath.Join(f.TempDir(), "t.db"), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	d := &devices.Downlink{Store: st, Twins: st}
	ctx, cancel := context.WithCancel(context.Background())
	go d.Run(ctx)
	f.Cleanup(cancel)
	s, _ := MustOpenServer(f, func(s *dashboard.Server) { s.Commands, s.Attributes = d, d })
	app := dashboard.App(s)
	for _, seed := range []struct{ id, cmd, query, body string }{
		{"pump", "1", "wait=1ms", `{"method":"ping","params":{"a":[1,2]},"timeout":"1s"}`},
		{"pump", "9223372036854775807", "status=queued&limit=1000&before=9223372036854775807", `{"method":"x","timeout":"720h1s"}`},
		{"pump", "-1", "wait=-1s", `{"method":"","params":"\u0000"}`},
		{"é", "0", "limit=0", `{"k":null,"ü":{"deep":[[[[]]]]}}`},
		{"..", "x", "", `[1]`},
		{"", "", "wait=61s", `{"method":"m","params":1e999}`},
	} {
		f.Add(seed.id, seed.cmd, seed.query, seed.body)
	}
	f.Fuzz(func(t *testing.T, id, cmd, query, body string) {
		// A valid long ?wait blocks for that long, as it should (no device
		// answers here): keep it short.
		if q, err := url.ParseQuery(query); err == nil {
			if w, err := time.ParseDuration(q.Get("wait")); err == nil && w > 100*time.Millisecond {
				q.Set("wait", "100ms")
				query = q.Encode()
			}
		}
		base := "/api/v1/devices/" + url.PathEscape(id)
		for _, r := range []struct{ method, path string }{
			{"POST", base + "/commands"},
			{"GET", base + "/commands"},
			{"GET", base + "/commands/" + url.PathEscape(cmd)},
			{"DELETE", base + "/commands/" + url.PathEscape(cmd)},
			{"GET", base + "/attributes"},
			{"GET", base + "/attributes/history"},
			{"PUT", base + "/attributes/shared"},
			{"PATCH", base + "/attributes/shared"},
		} {
			req, err := http.NewRequest(r.method, "http://127.0.0.1"+r.path+"?"+query, strings.NewReader(body))
			if err != nil {
				continue
			}
			req.Header.Set("Content-Type", "application/json")
			start := time.Now()
			resp, err := app.Test(req, -1)
			if err != nil {
				continue
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("%s %s took %v", r.method, r.path, took)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 500 && resp.StatusCode != 501 {
				t.Fatalf("%s %s?%s %q: %d %s", r.method, r.path, query, body, resp.StatusCode, b)
			}
		}
	})
}

// FuzzAlertAndBoardHandlers sends the rule, alert, board and metric
// settings routes
// arbitrary ids, query strings and bodies: int64 limits, empty, unicode,
// deep JSON. Nothing may earn a 5xx.
//
//	go test -run '^$' -fuzz FuzzAlertAndBoardHandlers -fuzztime 60s ./dashboard
func FuzzAlertAndBoardHandlers(f *testing.F) {
	st, err := sqlite.Open(filepath.Join(f.TempDir(), "t.db"), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	e := &alerts.Engine{Store: st, Messages: st}
	if _, err := e.CreateRule(context.Background(), devices.Rule{Name: "seeded", Kind: devices.RuleStatus}); err != nil {
		f.Fatal(err)
	}
	s, _ := MustOpenServer(f, func(s *dashboard.Server) { s.Alerts, s.Boards, s.MetricSettings = e, st, st })
	app := dashboard.App(s)
	for _, seed := range []struct{ id, query, body string }{
		{"1", "status=open&severity=critical&limit=1000&before=9223372036854775807", `{"name":"hot","metric":"temp","op":">","value":30,"clear":28,"for":"1m"}`},
		{"9223372036854775807", "device=é&rule=1", `{"name":"r","kind":"rate","interval":"1s","max":9223372036854775807}`},
		{"-1", "limit=0", `{"name":"x","kind":"inactivity","for":1e308}`},
		{"0", "status=nope", `{"name":"ü","metric":"t","op":">","value":1e999}`},
		{"x", "before=-1", `{"by":"` + strings.Repeat("a", 300) + `","note":"\u0000"}`},
		{"", "", `[[[[[]]]]]`},
		{"1", "", ``},
		{"1", "", `{"name":"b","window":"7d","panels":[{"kind":"timeseries","x":11,"w":2,"series":[{"device_prefix":"","metric":"t"}]},{"kind":"text","text":"# ü"}]}`},
		{"temp", "", `{"label":"T","unit":"°C","decimals":1,"min":-1e308,"max":1e308}`},
		{"1", "", `{"name":"b","window":"99999d","panels":[{"kind":"command","device":"d","method":"m","params":{"a":[1e999]}},{"kind":"map","tiles":"https://x/{z}/{x}/{y}"}]}`},
		{"1", "", `{"name":"b","panels":[{"kind":"stat","device":"d","metric":"m","decimals":-1,"min":1e308,"max":-1e308,"y":9223372036854775807}]}`},
	} {
		f.Add(seed.id, seed.query, seed.body)
	}
	f.Fuzz(func(t *testing.T, id, query, body string) {
		for _, r := range []struct{ method, path string }{
			{"POST", "/api/v1/rules"},
			{"GET", "/api/v1/rules"},
			{"GET", "/api/v1/rules/" + url.PathEscape(id)},
			{"PUT", "/api/v1/rules/" + url.PathEscape(id)},
			{"GET", "/api/v1/alerts"},
			{"GET", "/api/v1/alerts/" + url.PathEscape(id)},
			{"POST", "/api/v1/alerts/" + url.PathEscape(id) + "/ack"},
			{"POST", "/api/v1/alerts/" + url.PathEscape(id) + "/clear"},
			{"GET", "/api/v1/devices/" + url.PathEscape(id) + "/alerts"},
			{"DELETE", "/api/v1/rules/" + url.PathEscape(id)},
			{"POST", "/api/v1/boards"},
			{"GET", "/api/v1/boards"},
			{"GET", "/api/v1/boards/" + url.PathEscape(id)},
			{"PUT", "/api/v1/boards/" + url.PathEscape(id)},
			{"DELETE", "/api/v1/boards/" + url.PathEscape(id)},
			{"GET", "/api/v1/metric-settings"},
			{"PUT", "/api/v1/metric-settings/" + url.PathEscape(id)},
			{"DELETE", "/api/v1/metric-settings/" + url.PathEscape(id)},
		} {
			req, err := http.NewRequest(r.method, "http://127.0.0.1"+r.path+"?"+query, strings.NewReader(body))
			if err != nil {
				continue
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := app.Test(req, -1)
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Fatalf("%s %s?%s %q: %d %s", r.method, r.path, query, body, resp.StatusCode, b)
			}
		}
	})
}
