package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fasthttp/websocket"

	"github.com/telehub/telehub/store/postgres/pgtest"
)

// TestMain lets the test binary act as the hub in a child process (the crash
// test kills it with SIGKILL): with TELEHUB_TEST_CHILD=1 it runs main() with
// the arguments in TELEHUB_TEST_ARGS. Tests on PostgreSQL share a private
// server (pgtest), started by the first of them.
func TestMain(m *testing.M) {
	if os.Getenv("TELEHUB_TEST_CHILD") == "1" {
		os.Args = append([]string{"telehub"}, strings.Fields(os.Getenv("TELEHUB_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(pgtest.Main(m))
}

// MustRunMain runs the hub in-process with a temporary database and random
// loopback ports; it is closed at the end of the test.
func MustRunMain(tb testing.TB, configure ...func(*Config)) *Main {
	tb.Helper()
	cfg, err := ParseFlags(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.DB = filepath.Join(tb.TempDir(), "telehub.db")
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.LogLevel = "warn"
	for _, f := range configure {
		f(&cfg)
	}
	m := NewMain(cfg, os.Stderr)
	if err := m.Run(); err != nil {
		m.Close(context.Background())
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		start := time.Now()
		m.Close(context.Background())
		if took := time.Since(start); took > 5*time.Second {
			tb.Logf("closing the hub took %v", took.Round(time.Millisecond))
		}
	})
	return m
}

// checkFor polls f until it returns nil or d elapses.
func checkFor(tb testing.TB, d time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mqttConnect(tb testing.TB, url, id string) paho.Client {
	tb.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		tb.Fatalf("connect %s: %v", url, tok.Error())
	}
	tb.Cleanup(func() { c.Disconnect(0) })
	return c
}

// waitStored waits until m has stored at least n messages.
func waitStored(tb testing.TB, m *Main, n int64) {
	tb.Helper()
	checkFor(tb, 60*time.Second, func() error {
		if s := m.Stats.Snapshot().Stored; s < n {
			return fmt.Errorf("%d of %d stored", s, n)
		}
		return nil
	})
}

// publishN publishes n QoS 1 messages {"n":i,...} for device on c, all in
// flight at once, and returns how many were acknowledged.
func publishN(tb testing.TB, c paho.Client, device string, n int) int {
	tb.Helper()
	toks := make([]paho.Token, n)
	for i := range toks {
		toks[i] = c.Publish("devices/"+device+"/telemetry", 1, false, fmt.Sprintf(`{"n":%d,"temp":%d.5}`, i, i%40))
	}
	acked := 0
	for _, tok := range toks {
		if tok.WaitTimeout(60*time.Second) && tok.Error() == nil {
			acked++
		}
	}
	return acked
}

// frame is one WebSocket frame of /api/v1/ws.
type frame struct {
	Type    string          `json:"type"`
	Seq     int64           `json:"seq"`
	Device  string          `json:"device"`
	Kind    string          `json:"kind"`
	Topic   string          `json:"topic"`
	Payload json.RawMessage `json:"payload"`
	// status frames
	Status string `json:"status"`
	Reason string `json:"reason"`
	At     int64  `json:"at"`
	// command and attribute frames
	Command json.RawMessage `json:"command"`
	Event   json.RawMessage `json:"event"`
	Alert   json.RawMessage `json:"alert"`
}

type wsClient struct {
	statuses []frame // status frames seen by collect
	conn     *websocket.Conn
	frames   chan frame
	closed   chan error // the error that ended the read loop
}

func dialWS(tb testing.TB, base, query string) *wsClient {
	tb.Helper()
	url := "ws" + strings.TrimPrefix(base, "http") + "/api/v1/ws?" + query
	conn, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		tb.Fatalf("dial %s: %v (%v)", url, err, resp)
	}
	tb.Cleanup(func() { conn.Close() })
	c := &wsClient{conn: conn, frames: make(chan frame, 1<<16), closed: make(chan error, 1)}
	go func() {
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				c.closed <- err
				close(c.frames)
				return
			}
			var f frame
			if err := json.Unmarshal(b, &f); err != nil {
				c.closed <- fmt.Errorf("bad frame %s: %v", b, err)
				close(c.frames)
				return
			}
			c.frames <- f
		}
	}()
	return c
}

// collect reads message frames until n arrived, checking that sequence
// numbers strictly increase and that exactly one replay_end comes. Status
// frames (the hub's notes of devices going online or offline) are kept in
// c.statuses.
func (c *wsClient) collect(tb testing.TB, n int, d time.Duration) []frame {
	tb.Helper()
	var msgs []frame
	replayEnds := 0
	var last int64
	timeout := time.After(d)
	for len(msgs) < n || replayEnds == 0 {
		select {
		case f, ok := <-c.frames:
			if !ok {
				tb.Fatalf("websocket ended after %d of %d messages: %v", len(msgs), n, <-c.closed)
			}
			switch f.Type {
			case "replay_end":
				replayEnds++
			case "message":
				if f.Seq <= last {
					tb.Fatalf("seq %d after %d: duplicate or out of order", f.Seq, last)
				}
				last = f.Seq
				msgs = append(msgs, f)
			case "status":
				c.statuses = append(c.statuses, f)
			case "command", "attributes", "alert":
			default:
				tb.Fatalf("unexpected frame type %q", f.Type)
			}
		case <-timeout:
			tb.Fatalf("timed out with %d of %d messages", len(msgs), n)
		}
	}
	if replayEnds != 1 {
		tb.Fatalf("replay_end frames=%d, want 1", replayEnds)
	}
	return msgs
}

// drainStatuses moves the status frames that arrived into c.statuses.
func (c *wsClient) drainStatuses() {
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return
			}
			if f.Type == "status" {
				c.statuses = append(c.statuses, f)
			}
		default:
			return
		}
	}
}

func getJSON(tb testing.TB, url string, v any) int {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}

// TestMain_EndToEnd: 10 devices publish 10,000 QoS 1 messages through the
// embedded broker; all are stored and served by REST, and WebSocket clients
// that connect halfway see every message exactly once, in sequence order.
func TestMain_EndToEnd(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) { testEndToEnd(t) })
	t.Run("PostgreSQL", func(t *testing.T) { testEndToEnd(t, func(c *Config) { c.DB = pgtest.NewDB(t) }) })
}

func testEndToEnd(t *testing.T, configure ...func(*Config)) {
	m := MustRunMain(t, configure...)
	const nDevices, perDevice = 10, 1000
	var wg sync.WaitGroup
	var acked atomic.Int64
	for d := 0; d < nDevices; d++ {
		c := mqttConnect(t, m.Broker.URL(), fmt.Sprint("pub-", d))
		wg.Add(1)
		go func() {
			defer wg.Done()
			acked.Add(int64(publishN(t, c, fmt.Sprint("dev-", d), perDevice)))
		}()
	}
	// Halfway through, browsers connect and ask for everything.
	waitStored(t, m, nDevices*perDevice/2)
	all := dialWS(t, m.HTTP.URL(), "since=0")
	one := dialWS(t, m.HTTP.URL(), "device=dev-3&since=0")
	wg.Wait()
	if acked.Load() != nDevices*perDevice {
		t.Fatalf("acked=%d, want %d", acked.Load(), nDevices*perDevice)
	}

	got := all.collect(t, nDevices*perDevice, 60*time.Second)
	for i, f := range got {
		if f.Seq != int64(i+1) {
			t.Fatalf("frame %d has seq %d, want %d (no gap)", i, f.Seq, i+1)
		}
	}
	seen := map[int]bool{}
	for _, f := range one.collect(t, perDevice, 30*time.Second) {
		var p struct{ N int }
		json.Unmarshal(f.Payload, &p)
		if f.Device != "dev-3" || seen[p.N] {
			t.Fatalf("frame %+v: wrong device or duplicate", f)
		}
		seen[p.N] = true
	}

	var list struct {
		Devices []struct {
			ID           string `json:"id"`
			MessageCount int    `json:"message_count"`
		} `json:"devices"`
	}
	getJSON(t, m.HTTP.URL()+"/api/v1/devices", &list)
	if len(list.Devices) != nDevices {
		t.Fatalf("devices=%d, want %d", len(list.Devices), nDevices)
	}
	for _, d := range list.Devices {
		if d.MessageCount != perDevice {
			t.Fatalf("%s message_count=%d, want %d", d.ID, d.MessageCount, perDevice)
		}
	}
	var page struct {
		Messages []struct {
			Seq      int64           `json:"seq"`
			Device   string          `json:"device"`
			Topic    string          `json:"topic"`
			TS       int64           `json:"ts"`
			Received int64           `json:"received"`
			Payload  json.RawMessage `json:"payload"`
		} `json:"messages"`
		More bool `json:"more"`
	}
	getJSON(t, m.HTTP.URL()+"/api/v1/devices/dev-7/messages?limit=10000", &page)
	if len(page.Messages) != perDevice || page.More {
		t.Fatalf("REST returned %d messages (more=%v), want %d", len(page.Messages), page.More, perDevice)
	}
	if p := page.Messages[0]; p.Device != "dev-7" || p.Topic != "devices/dev-7/telemetry" || p.TS == 0 || p.Received == 0 || !strings.Contains(string(p.Payload), `"n":999`) {
		t.Fatalf("newest message=%+v, want dev-7's n=999 first", p)
	}

	// Graceful shutdown closes WebSockets with a close frame.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for range all.frames {
	}
	if err := <-all.closed; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("websocket ended with %v, want close 1001", err)
	}
}
