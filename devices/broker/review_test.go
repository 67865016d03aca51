package broker_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/broker"
)

// TestBroker_ReservedTopicOnce: a QoS 1 publish to a '$' topic other than
// $SYS once got two PUBACKs for one packet id (the second could acknowledge
// the client's next publish before its commit) and was still forwarded and
// retained. It gets one refusal and goes nowhere [MQTT-4.7.2-1].
func TestBroker_ReservedTopicOnce(t *testing.T) {
	_, w := MustStore(t)
	var stats devices.Stats
	b := MustOpen(t, w, func(b *broker.Broker) { b.Stats = &stats })
	sub := dialV5(t, b.ListenAddr())
	sub.subscribe(t, "$foo/#")

	c, _ := dial5(t, b.ListenAddr(), packets.ConnectParams{Clean: true, ClientIdentifier: "pub"}, packets.Properties{})
	c.id = 7
	if code := c.publish("$foo/bar", []byte("1"), 1, true, packets.Properties{}); code != packets.ErrNotAuthorized.Code {
		t.Fatalf("PUBACK %#x, want 0x87", code)
	}
	if got := c.publish("home/lights", []byte("on"), 1, false, packets.Properties{}); got != 0 { // the next ack is this one's
		t.Fatalf("next publish: PUBACK %#x", got)
	}
	c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.r.Peek(1); err == nil || len(c.pending) > 0 {
		t.Fatal("a second acknowledgement arrived")
	}
	sub.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := sub.r.Peek(1); err == nil {
		t.Fatal("the refused message was forwarded")
	}
	late := dialV5(t, b.ListenAddr())
	late.subscribe(t, "$foo/#")
	late.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := late.r.Peek(1); err == nil {
		t.Fatal("the refused message was retained")
	}
	if n := stats.Snapshot().Rejected[devices.ReasonReservedTopic]; n != 1 {
		t.Fatalf("reserved_topic=%d, want 1", n)
	}
}

// TestBroker_PlainAckOrder: a QoS 1 publish on a plain (non-device) topic
// once got its PUBACK from mochi ahead of an earlier device publish still
// waiting for its commit [MQTT-4.6.0-2]; and a refused QoS 2 publish from an
// MQTT 5 client got a PUBACK instead of a PUBREC.
func TestBroker_PlainAckOrder(t *testing.T) {
	gw := &gateWriter{c: make(chan *devices.Pending, 10)}
	b := MustOpen(t, gw, func(b *broker.Broker) { b.MaxPayload = 100 })
	c := dialV5(t, b.ListenAddr())
	send := func(id uint16, qos byte, topic, payload string) {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: 5,
			TopicName: topic, Payload: []byte(payload), PacketID: id}
		c.send(t, &pk, pk.PublishEncode)
	}
	send(1, 1, "devices/a/telemetry", `{"x":1}`)
	p1 := <-gw.c
	send(2, 1, "home/lights", "on")
	time.Sleep(100 * time.Millisecond) // the plain publish is being held back
	c.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.r.Peek(1); err == nil {
		t.Fatal("an acknowledgement left before the first publish was committed")
	}
	p1.Done(&p1.Message, nil)
	send(3, 2, "devices/a/telemetry", strings.Repeat("x", 200)) // too large: refused
	var got []string
	for i := 0; i < 3; i++ {
		ack := c.read(t)
		got = append(got, fmt.Sprintf("%s%d:%#x", packets.PacketNames[ack.FixedHeader.Type], ack.PacketID, ack.ReasonCode))
	}
	if want := "Puback1:0x0 Puback2:0x0 Pubrec3:0x97"; strings.Join(got, " ") != want {
		t.Fatalf("acknowledgements %v, want %s", got, want)
	}
}

// TestBroker_UserPropertiesAck: a QoS 1 publish with user properties on a
// plain topic once got a PUBACK with reason code 0x01, which MQTT.js refuses
// ("Invalid puback reason code"), after which it got no acknowledgement on
// that connection.
func TestBroker_UserPropertiesAck(t *testing.T) {
	_, w := MustStore(t)
	b := MustOpen(t, w)
	c := dialV5(t, b.ListenAddr())
	c.id++
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5,
		TopicName: "home/lights", Payload: []byte("on"), PacketID: c.id,
		Properties: packets.Properties{User: []packets.UserProperty{{Key: "k", Val: "v"}}}}
	c.send(t, &pk, pk.PublishEncode)
	if ack := c.read(t); ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != 0 {
		t.Fatalf("PUBACK reason %#x, want 0", ack.ReasonCode)
	}
}

// countingPresence records Online and Offline calls.
type countingPresence struct {
	mu     sync.Mutex
	online map[string]int
}

func (p *countingPresence) Online(d string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.online == nil {
		p.online = map[string]int{}
	}
	p.online[d]++
}

func (p *countingPresence) Offline(d, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.online[d]--
}

// TestBroker_ConnectThenReset: a device that sent CONNECT and reset the
// connection before reading its CONNACK stayed "online" for good and
// telehub_devices_connected overcounted, because mochi skips OnDisconnect
// when the CONNACK write fails.
func TestBroker_ConnectThenReset(t *testing.T) {
	db, w := MustStore(t)
	creds, toks := mustCredentials(t, db, "flaky")
	p := &countingPresence{}
	b := MustOpen(t, w, func(b *broker.Broker) { b.Auth, b.Presence = creds, p })
	for i := 0; i < 20; i++ {
		conn, err := net.Dial("tcp", b.ListenAddr())
		if err != nil {
			t.Fatal(err)
		}
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: fmt.Sprint("f", i), Keepalive: 30,
				UsernameFlag: true, Username: []byte(toks["flaky"])}}
		c := &v5Client{conn: conn, r: bufio.NewReader(conn)}
		c.send(t, &pk, pk.ConnectEncode)
		conn.(*net.TCPConn).SetLinger(0) // reset, unread CONNACK and all
		conn.Close()
	}
	waitFor(t, "the flaky device offline", func() bool { return b.ConnectedDevices() == 0 && !b.DeviceConnected("flaky") })
	time.Sleep(200 * time.Millisecond)
	if b.ConnectedDevices() != 0 {
		t.Fatalf("ConnectedDevices=%d after every connection was reset", b.ConnectedDevices())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.online["flaky"] != 0 {
		t.Fatalf("presence: %d more Online than Offline", p.online["flaky"])
	}
}

// TestBroker_ClientIDBoundToDevice: under device authentication, device
// "a" connecting with client id "b" once kicked device b off and, with clean
// session off, took over b's session (its subscriptions and queued
// messages). Each device's sessions are its own.
func TestBroker_ClientIDBoundToDevice(t *testing.T) {
	db, w := MustStore(t)
	creds, toks := mustCredentials(t, db, "a", "b")
	b := MustOpen(t, w, func(b *broker.Broker) { b.Auth, b.RequireAuth = creds, true })
	lost := make(chan error, 1)
	opts := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("b").SetUsername(toks["b"]).SetCleanSession(false).
		SetAutoReconnect(false).SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	cb := paho.NewClient(opts)
	if tok := cb.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cb.Disconnect(0)
	got := make(chan string, 10)
	if tok := cb.Subscribe("devices/b/commands/#", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	ca := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("b").SetUsername(toks["a"]).SetCleanSession(false).SetAutoReconnect(false))
	if tok := ca.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer ca.Disconnect(0)
	select {
	case err := <-lost:
		t.Fatalf("device b lost its connection when device a used its client id: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := b.Server().Publish("devices/b/commands/x", []byte("for b"), false, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "for b" {
			t.Fatalf("b got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b's subscription no longer delivers")
	}
}

// TestBroker_RateLimitV3NotAcked: an MQTT 3.1.1 device over its rate once
// got a PUBACK for every publish while all but one were discarded. Over
// the limit (a passing condition) it is not acknowledged, so it resends.
func TestBroker_RateLimitV3NotAcked(t *testing.T) {
	db, w := MustStore(t)
	var stats devices.Stats
	b := MustOpen(t, w, func(b *broker.Broker) { b.DeviceRate, b.DeviceBurst, b.Stats = 1, 1, &stats })
	c := MustConnect(t, b, "v3")
	var acked int
	for i := 0; i < 10; i++ {
		if tok := c.Publish("devices/fast/telemetry", 1, false, fmt.Sprintf(`{"n":%d}`, i)); tok.WaitTimeout(300*time.Millisecond) && tok.Error() == nil {
			acked++
		}
	}
	rows, _ := rawQuery(t, db, `SELECT count(*) FROM messages`)
	if fmt.Sprint(rows) != fmt.Sprintf("[%d]", acked) {
		t.Fatalf("%d acknowledged, %v stored: every acknowledged message must be stored", acked, rows)
	}
	if acked == 10 || stats.Snapshot().Rejected[devices.ReasonRateLimited] == 0 {
		t.Fatalf("acknowledged %d of 10 over a rate of 1/s", acked)
	}
}

// syncBuffer is a bytes.Buffer safe for the broker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

// TestBroker_RefusalLogBounded: 1,000 refused publishes with 60 KB topics
// once wrote 114 MiB of log (the throttle keys and the lines held whole
// topics). The log stays small.
func TestBroker_RefusalLogBounded(t *testing.T) {
	_, w := MustStore(t)
	var buf syncBuffer
	b := MustOpen(t, w, func(b *broker.Broker) { b.Logger = slog.New(slog.NewTextHandler(&buf, nil)) })
	c := dialV5(t, b.ListenAddr())
	long := strings.Repeat("%", 60_000)
	for i := 0; i < 1000; i++ {
		if code := c.publish(t, fmt.Sprintf("devices/%s%d/telemetry", long, i), []byte(`{"x":1}`)); code != packets.ErrTopicNameInvalid.Code {
			t.Fatalf("PUBACK %#x, want %#x", code, packets.ErrTopicNameInvalid.Code)
		}
	}
	if n := buf.Len(); n > 256<<10 {
		t.Fatalf("%d bytes of log for 1,000 refusals, want at most 256 KiB", n)
	}
	t.Logf("%d bytes of log", buf.Len())
}

// TestBroker_BoundedState: session expiry was MaxUint32, kept sessions had
// no cap, and one MQTT 5 connection could register 65,535 topic aliases
// (3,000 took the hub from 18 to 274 MB). Each is bounded now.
func TestBroker_BoundedState(t *testing.T) {
	_, w := MustStore(t)
	b := MustOpen(t, w, func(b *broker.Broker) { b.MaxSessions, b.MaxSessionExpiry = 5, time.Hour })
	addr := b.ListenAddr()

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	v := &v5Client{conn: conn, r: bufio.NewReader(conn)}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "long", Keepalive: 30},
		Properties: packets.Properties{SessionExpiryInterval: 0xFFFFFFFF, SessionExpiryIntervalFlag: true}}
	v.send(t, &pk, pk.ConnectEncode)
	ack := v.read(t)
	if ack.Properties.SessionExpiryInterval != 3600 || ack.Properties.TopicAliasMaximum != broker.TopicAliasMaximum {
		t.Fatalf("CONNACK session expiry %d, topic alias maximum %d; want 3600 and %d",
			ack.Properties.SessionExpiryInterval, ack.Properties.TopicAliasMaximum, broker.TopicAliasMaximum)
	}
	// An alias past the maximum ends the connection [MQTT-3.3.2-9].
	v.id++
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, TopicName: "a/b",
		Payload: []byte("x"), PacketID: v.id, Properties: packets.Properties{TopicAlias: broker.TopicAliasMaximum + 1, TopicAliasFlag: true}}
	v.send(t, &pub, pub.PublishEncode)
	if got := v.read(t); got.FixedHeader.Type != packets.Disconnect || got.ReasonCode != packets.ErrTopicAliasInvalid.Code {
		t.Fatalf("alias %d: got %v %#x, want DISCONNECT %#x", pub.Properties.TopicAlias, got.FixedHeader.Type, got.ReasonCode, packets.ErrTopicAliasInvalid.Code)
	}

	// Sessions kept for clients that went away: at most MaxSessions.
	for i := 0; i < 20; i++ {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID(fmt.Sprint("away-", i)).SetCleanSession(false).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		c.Disconnect(0)
	}
	waitFor(t, "kept sessions within the cap", func() bool { return b.Server().Clients.Len()-b.Clients() <= 6 })
}
