package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/telehub/telehub/devices/ingest"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

// mustBroker runs a plain mochi broker (anyone may do anything) on a random
// loopback port, standing in for an external broker, and returns its URL.
func mustBroker(tb testing.TB) (*mqtt.Server, string) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		tb.Fatal(err)
	}
	if err := s.AddListener(listeners.NewNet("t", ln)); err != nil {
		tb.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s, "tcp://" + ln.Addr().String()
}

// mustSubscriber opens a Subscriber on url storing into w.
func mustSubscriber(tb testing.TB, url string, w *sqlite.Writer, configure ...func(*ingest.Subscriber)) *ingest.Subscriber {
	tb.Helper()
	s := ingest.New(url, w)
	s.Logger = slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	for _, f := range configure {
		f(s)
	}
	if err := s.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close(context.Background()) })
	waitFor(tb, "subscribed", s.Connected)
	return s
}

func waitFor(tb testing.TB, what string, ok func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func count(tb testing.TB, db *sqlite.DB) int {
	tb.Helper()
	var n int
	storetest.RawDB(tb, db.Path).QueryRow(`SELECT count(*) FROM messages`).Scan(&n)
	return n
}

func publish(tb testing.TB, url, topic string, retain bool, payload string) {
	tb.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprint("dev-", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		tb.Fatal(tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Publish(topic, 1, retain, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		tb.Fatal(tok.Error())
	}
}

// TestSubscriber_Stores: QoS 1 messages from the external broker are
// stored, each once.
func TestSubscriber_Stores(t *testing.T) {
	_, url := mustBroker(t)
	db := storetest.MustOpenDB(t)
	w := storetest.MustOpenWriter(t, db)
	mustSubscriber(t, url, w)
	for i := 0; i < 10; i++ {
		publish(t, url, "devices/pump/telemetry", false, fmt.Sprintf(`{"n":%d}`, i))
	}
	waitFor(t, "10 messages stored", func() bool { return count(t, db) == 10 })
}

// TestSubscriber_RetainedOnce: a retained status was stored again every
// time the hub (re)subscribed, because the broker sends retained messages
// on each SUBSCRIBE. It is stored when published, and only then.
func TestSubscriber_RetainedOnce(t *testing.T) {
	_, url := mustBroker(t)
	db := storetest.MustOpenDB(t)
	w := storetest.MustOpenWriter(t, db)
	s := mustSubscriber(t, url, w, func(s *ingest.Subscriber) { s.ClientID = "hub-a" })
	publish(t, url, "devices/pump/status", true, "online")
	waitFor(t, "the status stored", func() bool { return count(t, db) == 1 })
	for i := 0; i < 3; i++ { // the hub reconnects, and subscribes again each time
		s.Close(context.Background())
		s = mustSubscriber(t, url, w, func(s *ingest.Subscriber) { s.ClientID = "hub-a" })
	}
	publish(t, url, "devices/pump/telemetry", false, `{"n":1}`) // a marker: everything before it was handled
	waitFor(t, "the marker stored", func() bool { return count(t, db) >= 2 })
	if n := count(t, db); n != 2 {
		t.Fatalf("%d messages stored, want 2: the retained status once and the marker", n)
	}
}

// TestSubscriber_PasswordNotLogged: credentials in the broker URL never
// reach the log.
func TestSubscriber_PasswordNotLogged(t *testing.T) {
	_, url := mustBroker(t)
	db := storetest.MustOpenDB(t)
	w := storetest.MustOpenWriter(t, db)
	var buf lockedBuffer
	withPass := strings.Replace(url, "tcp://", "tcp://hub:s3cret@", 1)
	mustSubscriber(t, withPass, w, func(s *ingest.Subscriber) { s.Logger = slog.New(slog.NewTextHandler(&buf, nil)) })
	if strings.Contains(buf.String(), "s3cret") {
		t.Fatalf("the log shows the password:\n%s", buf.String())
	}
}

// lockedBuffer is a bytes.Buffer safe for the logger's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
