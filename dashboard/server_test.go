package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/telehub/telehub/dashboard"
	"github.com/telehub/telehub/devices"
)

// memStore is an in-memory devices.MessageService: commit appends and
// publishes to the feed, as the store's writer does.
type memStore struct {
	mu   sync.Mutex
	msgs []devices.Message
	feed *devices.Feed
	// listErr, when set, is returned by ListMessages.
	listErr error
	// seriesPanic makes Series panic, as a handler bug would.
	seriesPanic atomic.Bool
	// replayGate, when set, holds the first Replay until it is closed.
	replayGate chan struct{}
	gateOnce   sync.Once
}

func (s *memStore) commit(device string, n int) {
	s.mu.Lock()
	var batch []devices.Message
	for i := 0; i < n; i++ {
		m := devices.Message{Seq: devices.Seq(len(s.msgs) + 1), Device: device, Topic: "devices/" + device + "/telemetry",
			TS: int64(len(s.msgs)), Received: int64(len(s.msgs)), Payload: []byte(fmt.Sprintf(`{"n":%d}`, len(s.msgs)))}
		s.msgs = append(s.msgs, m)
		batch = append(batch, m)
	}
	s.mu.Unlock()
	s.feed.Publish(batch)
}

func (s *memStore) FindDevice(ctx context.Context, id string) (*devices.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs {
		if m.Device == id {
			return &devices.Device{ID: id}, nil
		}
	}
	return nil, fmt.Errorf("device %q: %w", id, devices.ErrNotFound)
}

func (s *memStore) ListDevices(ctx context.Context) ([]*devices.Device, error) { return nil, nil }

func (s *memStore) ListMessages(ctx context.Context, f devices.MessageFilter) ([]devices.Message, error) {
	if s.listErr != nil {
		return nil, s.listErr
	}
	if _, err := s.FindDevice(ctx, f.Device); err != nil {
		return nil, err
	}
	return nil, nil
}

func (s *memStore) Series(ctx context.Context, q devices.SeriesQuery) (*devices.Series, error) {
	if s.seriesPanic.Load() {
		var m map[string]int
		m["boom"]++ // assignment to a nil map
	}
	if _, err := s.FindDevice(ctx, q.Device); err != nil {
		return nil, err
	}
	return &devices.Series{Points: map[string][]devices.Point{}}, nil
}

func (s *memStore) Replay(ctx context.Context, device string, after, upTo devices.Seq, fn func(*devices.Message) error) error {
	if s.replayGate != nil {
		s.gateOnce.Do(func() { <-s.replayGate })
	}
	s.mu.Lock()
	msgs := append([]devices.Message(nil), s.msgs...)
	s.mu.Unlock()
	for i := range msgs {
		m := &msgs[i]
		if m.Seq > after && m.Seq <= upTo && (device == "" || m.Device == device) {
			if err := fn(m); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *memStore) LastSeq() devices.Seq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return devices.Seq(len(s.msgs))
}

func MustOpenServer(tb testing.TB, configure ...func(*dashboard.Server)) (*dashboard.Server, *memStore) {
	tb.Helper()
	st := &memStore{feed: new(devices.Feed)}
	s := dashboard.NewServer(st, st.feed)
	s.Addr = "127.0.0.1:0"
	for _, f := range configure {
		f(s)
	}
	if err := s.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		st.feed.Close()
		s.Close(context.Background())
	})
	return s, st
}

func TestServer_Problems(t *testing.T) {
	s, st := MustOpenServer(t)
	st.commit("kitchen", 1)
	for _, tt := range []struct {
		path   string
		status int
		detail string
	}{
		{"/api/v1/devices/kitchen/series", 400, `"metrics"`},
		{"/api/v1/devices/kitchen/series?metrics=t&agg=median", 400, `"agg"`},
		{"/api/v1/devices/kitchen/series?metrics=t&interval=5x", 400, `"interval"`},
		{"/api/v1/devices/kitchen/series?metrics=t&interval=0s", 400, `"interval"`},
		{"/api/v1/devices/kitchen/series?metrics=t&max_points=0", 400, `"max_points"`},
		{"/api/v1/devices/kitchen/series?metrics=t&counts=yes", 400, `"counts"`},
		{"/api/v1/devices/kitchen/series?metrics=t&from=20&to=10", 400, `"from"`},
		{"/api/v1/devices/nosuch/series?metrics=t", 404, "nosuch"},
		// Extreme bounds once overflowed to an interval of 0 and panicked.
		{"/api/v1/devices/kitchen/series?metrics=t&from=-9223372036768375808&to=9223372036854775807&max_points=2", 400, `"to"`},
		{"/api/v1/devices/kitchen/series?metrics=t&from=-9223372036768375808&to=0&max_points=2", 400, `"from"`},
		{"/api/v1/devices/kitchen/messages?from=-9223372036854775808", 400, `"from"`},
		{"/api/v1/devices/kitchen/messages?to=10000-01-02T00:00:00Z", 400, `"to"`},
		{"/api/v1/devices/kitchen/messages?limit=0", 400, `"limit"`},
		{"/api/v1/devices/kitchen/messages?limit=10001", 400, `"limit"`},
		{"/api/v1/devices/kitchen/messages?limit=-5", 400, `"limit"`},
		{"/api/v1/devices/kitchen/messages?limit=abc", 400, `"limit"`},
		{"/api/v1/devices/kitchen/messages?from=yesterday", 400, `"from"`},
		{"/api/v1/devices/kitchen/messages?from=20&to=10", 400, `"from"`},
		{"/api/v1/devices/kitchen/messages?order=sideways", 400, `"order"`},
		{"/api/v1/devices/kitchen/messages?time=device", 400, `"time"`},
		{"/api/v1/devices/bad%20id/messages", 400, `"id"`},
		{"/api/v1/devices/nosuch/messages", 404, "nosuch"},
		{"/api/v1/devices/nosuch", 404, "nosuch"},
		{"/api/v1/nothing-here", 404, ""},
	} {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(s.URL() + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p struct {
				Status int
				Detail string
			}
			json.NewDecoder(resp.Body).Decode(&p)
			if resp.StatusCode != tt.status || p.Status != tt.status {
				t.Fatalf("status=%d body status=%d, want %d", resp.StatusCode, p.Status, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
				t.Fatalf("Content-Type=%q, want application/problem+json", ct)
			}
			if !strings.Contains(p.Detail, tt.detail) {
				t.Fatalf("detail=%q, want it to name %s", p.Detail, tt.detail)
			}
		})
	}
	t.Run("the widest range at two points is served", func(t *testing.T) {
		for _, mp := range []string{"1", "2", "3", "100000"} {
			resp, err := http.Get(s.URL() + "/api/v1/devices/kitchen/series?metrics=t&from=-377736739200000&to=253402300800000&max_points=" + mp)
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Interval int64 `json:"interval_ms"`
			}
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != 200 || body.Interval <= 0 {
				t.Fatalf("max_points=%s: status=%d interval_ms=%d, want 200 and a positive interval", mp, resp.StatusCode, body.Interval)
			}
		}
	})
	t.Run("a panicking handler answers 500 and the server lives on", func(t *testing.T) {
		st.seriesPanic.Store(true)
		resp, err := http.Get(s.URL() + "/api/v1/devices/kitchen/series?metrics=t")
		st.seriesPanic.Store(false)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 500 {
			t.Fatalf("status=%d, want 500", resp.StatusCode)
		}
		resp, err = http.Get(s.URL() + "/api/v1/devices/kitchen/series?metrics=t")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("after the panic: status=%d, want 200", resp.StatusCode)
		}
	})
	t.Run("internal error hides details", func(t *testing.T) {
		st.listErr = errors.New("disk I/O error at /secret/path")
		defer func() { st.listErr = nil }()
		resp, err := http.Get(s.URL() + "/api/v1/devices/kitchen/messages")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p struct{ Detail string }
		json.NewDecoder(resp.Body).Decode(&p)
		if resp.StatusCode != 500 || strings.Contains(p.Detail, "secret") {
			t.Fatalf("status=%d detail=%q, want 500 without internals", resp.StatusCode, p.Detail)
		}
	})
}

type wsFrame struct {
	Type   string `json:"type"`
	Seq    int64  `json:"seq"`
	Device string `json:"device"`
}

func dial(tb testing.TB, s *dashboard.Server, query string, header http.Header) (*websocket.Conn, *http.Response, error) {
	tb.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+s.ListenAddr()+"/api/v1/ws?"+query, header)
	if err == nil {
		tb.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

// read returns the next n message frames, failing on a gap or duplicate.
func read(tb testing.TB, c *websocket.Conn, from int64, n int) (types []string) {
	tb.Helper()
	want := from
	for got := 0; got < n; {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var f wsFrame
		if err := c.ReadJSON(&f); err != nil {
			tb.Fatalf("after %d of %d messages: %v", got, n, err)
		}
		types = append(types, f.Type)
		if f.Type != "message" {
			continue
		}
		if f.Seq != want {
			tb.Fatalf("seq=%d, want %d", f.Seq, want)
		}
		want++
		got++
	}
	return types
}

func TestServer_WebSocket(t *testing.T) {
	t.Run("ReplayThenLive", func(t *testing.T) {
		s, st := MustOpenServer(t)
		st.commit("a", 5)
		c, _, err := dial(t, s, "since=2", nil)
		if err != nil {
			t.Fatal(err)
		}
		types := read(t, c, 3, 3) // 3..5 replayed
		st.commit("a", 4)         // 6..9 live
		types = append(types, read(t, c, 6, 4)...)
		if n := strings.Count(strings.Join(types, ","), "replay_end"); n != 1 {
			t.Fatalf("frames %v: want one replay_end", types)
		}
	})
	t.Run("DeviceFilter", func(t *testing.T) {
		s, st := MustOpenServer(t)
		st.commit("a", 2)
		st.commit("b", 2)
		c, _, err := dial(t, s, "device=b&since=0", nil)
		if err != nil {
			t.Fatal(err)
		}
		read(t, c, 3, 2)
		st.commit("a", 1)
		st.commit("b", 1)
		read(t, c, 6, 1)
	})
	t.Run("LaggedClientResyncs", func(t *testing.T) {
		s, st := MustOpenServer(t, func(s *dashboard.Server) { s.WSQueue = 1 })
		st.commit("a", 3)
		st.replayGate = make(chan struct{})
		c, _, err := dial(t, s, "since=0", nil)
		if err != nil {
			t.Fatal(err)
		}
		// While the handler is held in its first replay (up to seq 3), 200
		// batches arrive: its one-batch queue overflows and the feed drops it.
		checkFor(t, func() bool { return st.feed.Len() == 1 })
		for i := 0; i < 200; i++ {
			st.commit("a", 1)
		}
		checkFor(t, func() bool { return st.feed.Len() == 0 })
		close(st.replayGate)
		types := read(t, c, 1, 203) // every message once, in order
		if !strings.Contains(strings.Join(types, ","), "resync") {
			t.Fatalf("frames %v: want a resync after falling behind", types)
		}
		st.commit("a", 1) // and live again afterwards
		read(t, c, 204, 1)
	})
	t.Run("ForeignOrigin", func(t *testing.T) {
		s, _ := MustOpenServer(t, func(s *dashboard.Server) { s.AllowedOrigins = []string{"https://ops.example"} })
		if _, resp, err := dial(t, s, "", http.Header{"Origin": {"https://evil.example"}}); err == nil || resp == nil || resp.StatusCode != 403 {
			t.Fatalf("foreign origin: err=%v resp=%v, want 403", err, resp)
		}
		for _, origin := range []string{"http://" + s.ListenAddr(), "https://ops.example"} {
			if _, _, err := dial(t, s, "", http.Header{"Origin": {origin}}); err != nil {
				t.Fatalf("origin %s refused: %v", origin, err)
			}
		}
	})
	t.Run("BadParameters", func(t *testing.T) {
		s, _ := MustOpenServer(t)
		for _, q := range []string{"since=-1", "since=x", "device=bad%20id"} {
			if _, resp, err := dial(t, s, q, nil); err == nil || resp == nil || resp.StatusCode != 400 {
				t.Fatalf("%s: err=%v resp=%v, want 400", q, err, resp)
			}
		}
		resp, err := http.Get(s.URL() + "/api/v1/ws")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("plain GET status=%d, want 426", resp.StatusCode)
		}
	})
	t.Run("CloseFrameOnShutdown", func(t *testing.T) {
		s, st := MustOpenServer(t)
		c, _, err := dial(t, s, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		read(t, c, 1, 0)
		st.feed.Close()
		s.Close(context.Background())
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
					t.Fatalf("err=%v, want close 1001", err)
				}
				return
			}
		}
	})
}

func checkFor(tb testing.TB, f func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServer_SlowClientDisconnected: a client that never reads is cut off
// after WSWriteTimeout once its socket buffers are full, while the feed
// goes on.
func TestServer_SlowClientDisconnected(t *testing.T) {
	s, st := MustOpenServer(t, func(s *dashboard.Server) { s.WSWriteTimeout = 200 * time.Millisecond })
	big := strings.Repeat("x", 64<<10)
	st.mu.Lock()
	for i := 0; i < 400; i++ { // 25 MiB of history: more than the socket buffers hold
		st.msgs = append(st.msgs, devices.Message{Seq: devices.Seq(i + 1), Device: "a", Topic: "t", Payload: []byte(`"` + big + `"`)})
	}
	st.mu.Unlock()
	c, _, err := dial(t, s, "since=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c // never read
	checkFor(t, func() bool { return s.WSClients() == 1 })
	start := time.Now()
	checkFor(t, func() bool { return s.WSClients() == 0 })
	t.Logf("slow client disconnected after %v", time.Since(start))
	st.commit("a", 1) // publishing to the feed still works
}

func TestServer_WebSocketBatch(t *testing.T) {
	s, st := MustOpenServer(t)
	st.commit("a", 1500) // replay: more than one batch frame
	c, _, err := dial(t, s, "since=0&batch=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var want int64 = 1
	frames := 0
	read := func(n int) {
		for want <= int64(n) {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var f struct {
				Type     string
				Messages []wsFrame
			}
			if err := c.ReadJSON(&f); err != nil {
				t.Fatal(err)
			}
			if f.Type == "replay_end" {
				continue
			}
			if f.Type != "messages" {
				t.Fatalf("frame type %q, want messages", f.Type)
			}
			frames++
			for _, m := range f.Messages {
				if m.Seq != want {
					t.Fatalf("seq %d, want %d", m.Seq, want)
				}
				want++
			}
		}
	}
	read(1500)
	st.commit("a", 10) // live: one frame for the batch
	read(1510)
	if frames != 3 {
		t.Fatalf("%d frames, want 3 (1,000 + 500 replayed, 10 live)", frames)
	}
}

// TestServer_OpenAPI: every route is described in /api/v1/openapi.json and
// every described operation is a route.
func TestServer_OpenAPI(t *testing.T) {
	s, _ := MustOpenServer(t, func(s *dashboard.Server) { s.Metrics = http.NotFoundHandler() })
	resp, err := http.Get(s.URL() + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi.json: %v (version %q)", err, doc.OpenAPI)
	}
	described := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			described[strings.ToUpper(method)+" "+path] = true
		}
	}
	routes := map[string]bool{}
	for _, r := range s.Routes() {
		routes[r] = true
		if !described[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for op := range described {
		if !routes[op] {
			t.Errorf("openapi.json describes %s, which is not a route", op)
		}
	}
	if len(routes) < 10 {
		t.Fatalf("only %d routes found: %v", len(routes), s.Routes())
	}
}

// TestServer_WebSocketLimits: past WSMaxClients a handshake gets 503 (and
// is counted); a text frame that is not UTF-8 closes the socket with 1007;
// a frame over the read limit closes it too.
func TestServer_WebSocketLimits(t *testing.T) {
	var stats devices.Stats
	s, _ := MustOpenServer(t, func(s *dashboard.Server) { s.WSMaxClients, s.Stats = 2, &stats })
	a, _, err := dial(t, s, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dial(t, s, "", nil); err != nil {
		t.Fatal(err)
	}
	checkFor(t, func() bool { return s.WSClients() == 2 })
	if _, resp, err := dial(t, s, "", nil); err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("third client: %v, want 503", err)
	}
	if n := stats.Snapshot().Refused[devices.RefusedWSTooMany]; n != 1 {
		t.Fatalf("refused %d, want 1", n)
	}

	a.WriteMessage(websocket.TextMessage, []byte{0xff, 0xfe})
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := a.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseInvalidFramePayloadData) {
				t.Fatalf("after invalid UTF-8: %v, want close 1007", err)
			}
			break
		}
	}
	checkFor(t, func() bool { return s.WSClients() == 1 })

	b, _, err := dial(t, s, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("x", 64<<10)))
	checkFor(t, func() bool { return s.WSClients() == 1 })
}

// TestServer_WebSocketReset: a client resuming with a since above every seq
// of the database (restored from a backup, or a new one) once got nothing,
// ever: live messages at or below its old position were all skipped. It
// gets a reset frame with the current seq, then every new message.
func TestServer_WebSocketReset(t *testing.T) {
	s, st := MustOpenServer(t)
	st.commit("kitchen", 5)
	c, _, err := dial(t, s, "since=1000", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f wsFrame
	if err := c.ReadJSON(&f); err != nil || f.Type != "reset" || f.Seq != 5 {
		t.Fatalf("first frame %+v (%v), want reset at seq 5", f, err)
	}
	if err := c.ReadJSON(&f); err != nil || f.Type != "replay_end" || f.Seq != 5 {
		t.Fatalf("second frame %+v (%v), want replay_end at seq 5", f, err)
	}
	st.commit("kitchen", 3)
	read(t, c, 6, 3)
}

// request sends method to path with the given headers and returns the status.
func request(tb testing.TB, s *dashboard.Server, method, path string, header map[string]string) int {
	tb.Helper()
	req, err := http.NewRequest(method, s.URL()+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestServer_CrossSite: with no API token (the loopback default) a foreign
// page could rotate a device token, mint credentials with a form POST and
// run backups, a DNS-rebound name was served, and the WebSocket's Origin
// check trusted X-Forwarded-Host. Now the Host must be the hub's (an IP,
// localhost, or an allowed name), every request that changes something
// must be same-origin, and proxy headers count only from trusted proxies.
func TestServer_CrossSite(t *testing.T) {
	s, st := MustOpenServer(t, func(s *dashboard.Server) { s.AllowedHosts = []string{"hub.example"} })
	st.commit("kitchen", 1)
	own := s.URL()
	for _, tt := range []struct {
		name   string
		method string
		path   string
		header map[string]string
		want   int
	}{
		{"own page", "GET", "/api/v1/devices/kitchen/messages", nil, 200},
		{"rebound name", "GET", "/api/v1/devices/kitchen/messages", map[string]string{"Host": "evil.example:8080"}, 403},
		{"allowed name", "GET", "/api/v1/devices/kitchen/messages", map[string]string{"Host": "hub.example:8080"}, 200},
		{"localhost", "GET", "/api/v1/devices/kitchen/messages", map[string]string{"Host": "localhost"}, 200},
		{"foreign form post", "DELETE", "/api/v1/devices/kitchen", map[string]string{"Origin": "https://evil.example"}, 403},
		{"cross-site fetch without Origin", "DELETE", "/api/v1/devices/kitchen", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"foreign origin through a forged proxy header", "DELETE", "/api/v1/devices/kitchen", map[string]string{"Origin": "https://evil.example", "X-Forwarded-Host": "evil.example"}, 403},
		{"websocket from a forged proxy header", "GET", "/api/v1/ws", map[string]string{"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example",
			"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, 403},
		{"same origin", "DELETE", "/api/v1/devices/nosuch", map[string]string{"Origin": own}, 501}, // no deleter: it got through
		{"no origin (curl)", "DELETE", "/api/v1/devices/nosuch", nil, 501},
	} {
		if got := request(t, s, tt.method, tt.path, tt.header); got != tt.want {
			t.Errorf("%s: %s %s: status %d, want %d", tt.name, tt.method, tt.path, got, tt.want)
		}
	}
}
