package dashboard_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/telehub/telehub/dashboard"
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
