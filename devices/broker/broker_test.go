package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/broker"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

// MustOpen starts a broker on a random loopback port writing to w.
func MustOpen(tb testing.TB, w devices.MessageWriter, configure ...func(*broker.Broker)) *broker.Broker {
	tb.Helper()
	b := broker.New(w)
	b.Addr = "127.0.0.1:0"
	b.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, f := range configure {
		f(b)
	}
	if err := b.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close(context.Background()) })
	return b
}

// MustStore opens a real store with a running Writer.
func MustStore(tb testing.TB) (*sqlite.DB, *sqlite.Writer) {
	tb.Helper()
	db := storetest.MustOpenDB(tb)
	return db, storetest.MustOpenWriter(tb, db)
}

// MustConnect connects a paho (MQTT 3.1.1) client.
func MustConnect(tb testing.TB, b *broker.Broker, id string) paho.Client {
	tb.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID(id).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		tb.Fatalf("connect: %v", tok.Error())
	}
	tb.Cleanup(func() { c.Disconnect(0) })
	return c
}

// gateWriter is a MessageWriter that holds every message until the test
// commits or fails it: it makes "no PUBACK before commit" observable.
type gateWriter struct{ c chan *devices.Pending }

func (g *gateWriter) Write(ctx context.Context, p *devices.Pending) error {
	select {
	case g.c <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gateWriter) TryWrite(p *devices.Pending) error {
	select {
	case g.c <- p:
		return nil
	default:
		return devices.ErrQueueFull
	}
}

func TestBroker_PubackAfterCommit(t *testing.T) {
	gw := &gateWriter{c: make(chan *devices.Pending, 10)}
	b := MustOpen(t, gw)
	c := MustConnect(t, b, "dev")

	t.Run("OK", func(t *testing.T) {
		tok := c.Publish("devices/kitchen/telemetry", 1, false, `{"temp":21.5}`)
		p := <-gw.c
		if p.Message.Device != "kitchen" || p.Message.Kind != devices.KindTelemetry || len(p.Message.Values) != 1 {
			t.Fatalf("writer got %+v", p.Message)
		}
		if tok.WaitTimeout(300 * time.Millisecond) {
			t.Fatal("PUBACK arrived before the message was committed")
		}
		p.Done(&p.Message, nil) // commit
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("no PUBACK after commit: %v", tok.Error())
		}
	})
	t.Run("NoAckOnStoreError", func(t *testing.T) {
		tok := c.Publish("devices/kitchen/telemetry", 1, false, `{"temp":22}`)
		p := <-gw.c
		p.Done(&p.Message, fmt.Errorf("disk full"))
		if tok.WaitTimeout(300 * time.Millisecond) {
			t.Fatal("PUBACK for a message that was not stored")
		}
	})
}

// TestBroker_InFlight: one connection with many QoS 1 messages in flight is
// not limited to one message per commit, and acknowledgements and rows keep
// the connection's order.
func TestBroker_InFlight(t *testing.T) {
	db, w := MustStore(t)
	b := MustOpen(t, w)
	c := MustConnect(t, b, "gateway")
	const n = 2000
	toks := make([]paho.Token, n)
	for i := range toks {
		toks[i] = c.Publish(fmt.Sprintf("devices/dev-%d/telemetry", i%10), 1, false, fmt.Sprintf(`{"n":%d}`, i))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	rows, err := rawQuery(t, db, `SELECT payload FROM messages ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != n {
		t.Fatalf("rows=%d, want %d", len(rows), n)
	}
	for i, p := range rows {
		if want := fmt.Sprintf(`{"n":%d}`, i); p != want {
			t.Fatalf("row %d payload=%s, want %s (publish order)", i, p, want)
		}
	}
}

// TestBroker_Refusals: refused publishes get the MQTT 5 reason code, are
// acknowledged and discarded on 3.1.1, are counted, and are not stored.
func TestBroker_Refusals(t *testing.T) {
	db, w := MustStore(t)
	var stats devices.Stats
	b := MustOpen(t, w, func(b *broker.Broker) { b.MaxPayload = 1024; b.Stats = &stats })

	v5 := dialV5(t, b.ListenAddr())
	for _, tt := range []struct {
		name    string
		topic   string
		payload []byte
		code    byte
	}{
		{"invalid device id", "devices/bad id/telemetry", []byte(`{}`), packets.ErrTopicNameInvalid.Code},
		{"payload too large", "devices/big/telemetry", bytes.Repeat([]byte("x"), 1025), packets.ErrQuotaExceeded.Code},
		{"ok", "devices/fine/telemetry", []byte(`{"a":1}`), packets.CodeSuccess.Code},
		{"not json is stored", "devices/fine/telemetry", []byte{0xff, 0x00}, packets.CodeSuccess.Code},
		{"not a device topic passes through", "home/lights", []byte(`on`), packets.CodeSuccess.Code},
	} {
		t.Run("v5 "+tt.name, func(t *testing.T) {
			if got := v5.publish(t, tt.topic, tt.payload); got != tt.code {
				t.Fatalf("PUBACK reason=%#x, want %#x", got, tt.code)
			}
		})
	}

	t.Run("v3 acked and discarded", func(t *testing.T) {
		c := MustConnect(t, b, "v3")
		for _, topic := range []string{"devices/bad id/telemetry", "devices/big/telemetry"} {
			payload := `{}`
			if strings.Contains(topic, "big") {
				payload = strings.Repeat("x", 1025)
			}
			if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("%s: %v", topic, tok.Error())
			}
		}
	})

	t.Run("packet over the hard limit disconnects", func(t *testing.T) {
		c := MustConnect(t, b, "huge")
		tok := c.Publish("devices/huge/telemetry", 1, false, bytes.Repeat([]byte("x"), 1024+65<<10))
		tok.WaitTimeout(5 * time.Second)
		deadline := time.Now().Add(5 * time.Second)
		for c.IsConnectionOpen() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if c.IsConnectionOpen() {
			t.Fatal("client still connected after an oversized packet")
		}
	})

	rows, _ := rawQuery(t, db, `SELECT d.name FROM messages m JOIN devices d ON d.id = m.device_id`)
	if len(rows) != 2 || rows[0] != "fine" || rows[1] != "fine" {
		t.Fatalf("stored devices=%v, want [fine fine]", rows)
	}
	s := stats.Snapshot()
	if s.Rejected[devices.ReasonInvalidTopic] != 2 || s.Rejected[devices.ReasonTooLarge] != 2 {
		t.Fatalf("rejected=%v, want 2 invalid_topic and 2 payload_too_large", s.Rejected)
	}
	if s.Received != 6 {
		t.Fatalf("received=%d, want 6 (device topics only)", s.Received)
	}
}

func rawQuery(tb testing.TB, db *sqlite.DB, q string) ([]string, error) {
	tb.Helper()
	raw := storetest.RawDB(tb, db.Path)
	rows, err := raw.Query(q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	return out, rows.Err()
}

// v5Client is a minimal MQTT 5 client built on mochi's packet codec, enough
// to read PUBACK reason codes, which the 3.1.1 paho client cannot.
type v5Client struct {
	conn net.Conn
	r    *bufio.Reader
	id   uint16
	mu   sync.Mutex
}

func dialV5(tb testing.TB, addr string) *v5Client {
	tb.Helper()
	c, code := dialV5As(tb, addr, "v5-test", "", "")
	if code != 0 {
		tb.Fatalf("CONNACK reason %#x", code)
	}
	return c
}

// dialV5As connects with a username and password (empty: none) and returns
// the client and the CONNACK reason code.
func dialV5As(tb testing.TB, addr, id, user, pass string) (*v5Client, byte) {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	c := &v5Client{conn: conn, r: bufio.NewReader(conn)}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: id, Keepalive: 30,
			UsernameFlag: user != "", Username: []byte(user), PasswordFlag: pass != "", Password: []byte(pass)},
	}
	c.send(tb, &pk, pk.ConnectEncode)
	ack := c.read(tb)
	if ack.FixedHeader.Type != packets.Connack {
		tb.Fatalf("got %+v, want CONNACK", ack.FixedHeader)
	}
	return c, ack.ReasonCode
}

// subscribe sends one SUBSCRIBE and returns the SUBACK reason code.
func (c *v5Client) subscribe(tb testing.TB, filter string) byte {
	tb.Helper()
	c.id++
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		ProtocolVersion: 5,
		PacketID:        c.id,
		Filters:         packets.Subscriptions{{Filter: filter, Qos: 1}},
	}
	c.send(tb, &pk, pk.SubscribeEncode)
	ack := c.read(tb)
	if ack.FixedHeader.Type != packets.Suback || len(ack.ReasonCodes) != 1 {
		tb.Fatalf("got %+v, want SUBACK", ack)
	}
	return ack.ReasonCodes[0]
}

func (c *v5Client) send(tb testing.TB, pk *packets.Packet, encode func(*bytes.Buffer) error) {
	tb.Helper()
	var buf bytes.Buffer
	if err := encode(&buf); err != nil {
		tb.Fatal(err)
	}
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		tb.Fatal(err)
	}
}

func (c *v5Client) read(tb testing.TB) packets.Packet {
	tb.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var pk packets.Packet
	pk.ProtocolVersion = 5
	hb, err := c.r.ReadByte()
	if err != nil {
		tb.Fatal(err)
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		tb.Fatal(err)
	}
	if pk.FixedHeader.Remaining, _, err = packets.DecodeLength(c.r); err != nil {
		tb.Fatal(err)
	}
	body := make([]byte, pk.FixedHeader.Remaining)
	if _, err := io.ReadFull(c.r, body); err != nil {
		tb.Fatal(err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return pk
}

// publish sends one QoS 1 publish and returns the PUBACK reason code.
func (c *v5Client) publish(tb testing.TB, topic string, payload []byte) byte {
	tb.Helper()
	c.id++
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: 1},
		ProtocolVersion: 5,
		TopicName:       topic,
		Payload:         payload,
		PacketID:        c.id,
	}
	c.send(tb, &pk, pk.PublishEncode)
	ack := c.read(tb)
	if ack.FixedHeader.Type != packets.Puback || ack.PacketID != c.id {
		tb.Fatalf("got %+v, want PUBACK %d", ack.FixedHeader, c.id)
	}
	return ack.ReasonCode
}

// TestBroker_LastWill: when a device's connection drops, its last will is
// stored and sets its status.
func TestBroker_LastWill(t *testing.T) {
	db, w := MustStore(t)
	b := MustOpen(t, w)
	conn, err := net.Dial("tcp", b.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	c := &v5Client{conn: conn, r: bufio.NewReader(conn)}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: "willing", Keepalive: 30,
			WillFlag: true, WillTopic: "devices/willing/status", WillPayload: []byte("offline"), WillQos: 1, WillRetain: true},
	}
	c.send(t, &pk, pk.ConnectEncode)
	if ack := c.read(t); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK=%+v", ack)
	}
	if code := c.publish(t, "devices/willing/status", []byte("online")); code != 0 {
		t.Fatalf("PUBACK reason %#x", code)
	}
	conn.Close() // no DISCONNECT: the broker sends the will
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := w.Device("willing")
		if err == nil && d.Status == "offline" && d.MessageCount == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("device after disconnect: %+v, %v; want status offline from its will", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rows, _ := rawQuery(t, db, `SELECT m.payload FROM messages m ORDER BY seq`)
	if len(rows) != 2 || rows[1] != "offline" {
		t.Fatalf("stored payloads %v, want [online offline]", rows)
	}
}

// TestBroker_ForwardBurst: an MQTT subscriber (an integration such as
// Node-RED) receives every message of a burst as large as the client write
// queue (DefaultClientWritesPending), although that queue is kept small.
func TestBroker_ForwardBurst(t *testing.T) {
	_, w := MustStore(t)
	b := MustOpen(t, w)
	var got atomic.Int64
	sub := MustConnect(t, b, "integration")
	if tok := sub.Subscribe("devices/+/telemetry", 1, func(paho.Client, paho.Message) { got.Add(1) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	const n = broker.DefaultClientWritesPending - 48
	pub := MustConnect(t, b, "gateway")
	toks := make([]paho.Token, n)
	for i := range toks {
		toks[i] = pub.Publish(fmt.Sprintf("devices/d%d/telemetry", i%50), 1, false, `{"x":1}`)
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got.Load() != n {
		t.Fatalf("subscriber received %d of %d", got.Load(), n)
	}
}
