package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telehub/telehub/dashboard"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/broker"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

// mustHub runs the hub's parts on random loopback ports: a store, the
// embedded broker and the web server. It returns the MQTT and HTTP URLs.
func mustHub(t *testing.T) (mqttURL, httpURL string) {
	t.Helper()
	db := storetest.MustOpenDB(t)
	feed := new(devices.Feed)
	w := sqlite.NewWriter(db)
	w.OnCommit = feed.Publish
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	b := broker.New(w)
	b.Addr = "127.0.0.1:0"
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	msgs := sqlite.NewMessageService(db)
	msgs.Summaries = w.Summaries()
	s := dashboard.NewServer(msgs, feed)
	s.Addr = "127.0.0.1:0"
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		b.Drain()
		w.Close(ctx)
		b.Close(ctx)
		feed.Close()
		s.Close(ctx)
	})
	return b.URL(), s.URL()
}

func TestRun_Usage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--help"}, 0, "Usage: telesim"},
		{[]string{"--devices", "0"}, 2, "--devices"},
		{[]string{"--qos", "3"}, 2, "--qos"},
		{[]string{"--profile", "toaster"}, 2, "--profile"},
		{[]string{"--profile", "custom", "--template", "{{nope}}"}, 2, "unknown placeholder"},
		{[]string{"--verify", "--qos", "0"}, 2, "--verify"},
		{[]string{"--broker", "http://x"}, 2, "--broker"},
		{[]string{"extra"}, 2, "unexpected argument"},
		{[]string{"replay"}, 2, "--file"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), tt.args, &out, &errb); code != tt.code || !strings.Contains(errb.String(), tt.msg) {
			t.Errorf("%v: code %d stderr %q, want %d mentioning %q", tt.args, code, errb.String(), tt.code, tt.msg)
		}
	}
}

func TestRun_VerifyJSON(t *testing.T) {
	mqttURL, httpURL := mustHub(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--broker", mqttURL, "--hub", httpURL, "--devices", "5", "--rate", "50", "--count", "20",
		"--profile", "meter", "--verify", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r map[string]any
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	for _, k := range []string{"sent", "acked", "stored", "received_live", "lost", "duplicated", "reordered"} {
		if _, ok := r[k].(float64); !ok {
			t.Errorf("report lacks %q: %s", k, out.String())
		}
	}
	for _, k := range []string{"ack_latency_ms", "e2e_latency_ms"} {
		p, _ := r[k].(map[string]any)
		for _, q := range []string{"p50", "p95", "p99", "max"} {
			if _, ok := p[q].(float64); !ok {
				t.Errorf("report %s lacks %q", k, q)
			}
		}
	}
	if r["sent"] != 100.0 || r["stored"] != 100.0 || r["lost"] != 0.0 {
		t.Fatalf("sent %v stored %v lost %v, want 100 100 0", r["sent"], r["stored"], r["lost"])
	}
}

func TestRun_Replay(t *testing.T) {
	mqttURL, _ := mustHub(t)
	file := filepath.Join(t.TempDir(), "data.csv")
	os.WriteFile(file, []byte("timestamp,device,temp\n1764489600000,r1,20.5\n1764489601000,r2,21\n1764489602000,r1,20.7\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"replay", "--file", file, "--speed", "0", "--broker", mqttURL}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "replayed 3 rows, 3 acknowledged") {
		t.Fatalf("output %q", out.String())
	}
}

// TestRun_NothingConnects: telesim once exited 0 with "connected 0/3" when
// the broker was down or refused its devices, also with --verify; it fails,
// saying why. A token file shorter than the fleet is refused instead of
// reusing tokens.
func TestRun_NothingConnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--broker", "tcp://" + addr, "--devices", "3", "--rate", "5", "--duration", "1s"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "3 of 3 devices never connected") {
		t.Fatalf("broker down: exit %d, stderr %q; want 1 saying no device connected", code, errb.String())
	}

	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("thd_a\nthd_b\n"), 0o600)
	errb.Reset()
	code = run(context.Background(), []string{"--broker", "tcp://" + addr, "--devices", "3", "--token-file", tokens, "--duration", "1s"}, &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "2 tokens for 3 devices") {
		t.Fatalf("short token file: exit %d, stderr %q", code, errb.String())
	}
}

// TestRun_VerifyAfterInterrupt: after Ctrl-C, --verify once printed
// "stored 0 ... lost 0" without checking anything; it checks what was sent.
func TestRun_VerifyAfterInterrupt(t *testing.T) {
	mqttURL, httpURL := mustHub(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(1500*time.Millisecond, cancel) // Ctrl-C
	var out, errb bytes.Buffer
	code := run(ctx, []string{"--broker", mqttURL, "--hub", httpURL, "--devices", "3", "--rate", "20", "--verify", "--json"}, &out, &errb)
	var r struct{ Sent, Acked, Stored, Lost int64 }
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("exit %d, report %q: %v (%s)", code, out.String(), err, errb.String())
	}
	if code != 0 || r.Acked == 0 || r.Stored < r.Acked || r.Lost != 0 {
		t.Fatalf("exit %d, report %+v: want every acknowledged message found stored", code, r)
	}
}
