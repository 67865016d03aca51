package broker_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/broker"
	"github.com/telehub/telehub/store/sqlite"
)

// mustCredentials provisions devices and returns their tokens.
func mustCredentials(tb testing.TB, db *sqlite.DB, ids ...string) (*sqlite.Credentials, map[string]string) {
	tb.Helper()
	c := sqlite.NewCredentials(db)
	toks := map[string]string{}
	for _, id := range ids {
		tok, err := c.AddDevice(context.Background(), id)
		if err != nil {
			tb.Fatal(err)
		}
		toks[id] = tok
	}
	return c, toks
}

func storedDevices(tb testing.TB, db *sqlite.DB) []string {
	tb.Helper()
	rows, err := rawQuery(tb, db, `SELECT d.name FROM messages m JOIN devices d ON d.id = m.device_id ORDER BY m.seq`)
	if err != nil {
		tb.Fatal(err)
	}
	return rows
}

// TestBroker_Auth tries each forbidden thing over MQTT 5 against a broker
// that requires device credentials, and checks that it is refused, counted,
// and that nothing of it was stored.
func TestBroker_Auth(t *testing.T) {
	db, w := MustStore(t)
	creds, toks := mustCredentials(t, db, "kitchen", "garage")
	var stats devices.Stats
	b := MustOpen(t, w, func(b *broker.Broker) { b.Auth, b.RequireAuth, b.Stats = creds, true, &stats })
	addr := b.ListenAddr()

	for _, tt := range []struct{ name, user, pass string }{
		{"no credentials", "", ""},
		{"wrong token", "thd_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""},
		{"api token as device token", "tha_x", ""},
		{"token of another device", "kitchen", toks["garage"]},
		{"device id without token", "kitchen", ""},
	} {
		if _, code := dialV5As(t, addr, "c-"+tt.name, tt.user, tt.pass); code != packets.ErrBadUsernameOrPassword.Code {
			t.Errorf("%s: CONNACK %#x, want %#x", tt.name, code, packets.ErrBadUsernameOrPassword.Code)
		}
	}

	// The token as username (ThingsBoard style).
	k, code := dialV5As(t, addr, "k1", toks["kitchen"], "")
	if code != 0 {
		t.Fatalf("kitchen by token: CONNACK %#x", code)
	}
	if got := k.publish(t, "devices/kitchen/telemetry", []byte(`{"t":1}`)); got != 0 {
		t.Fatalf("own topic: PUBACK %#x", got)
	}
	if got := k.publish(t, "v1/devices/me/telemetry", []byte(`{"t":2}`)); got != 0 {
		t.Fatalf("me topic: PUBACK %#x", got)
	}
	for _, topic := range []string{"devices/garage/telemetry", "devices/garage/status", "home/lights", "$SYS/broker/uptime"} {
		if got := k.publish(t, topic, []byte(`{"t":3}`)); got != packets.ErrNotAuthorized.Code {
			t.Fatalf("publish to %s: PUBACK %#x, want not authorised", topic, got)
		}
	}
	if got := k.subscribe(t, "devices/kitchen/commands/#"); got != 1 {
		t.Fatalf("own commands: SUBACK %#x, want QoS 1", got)
	}
	for _, filter := range []string{"devices/garage/commands/#", "devices/+/commands/#", "devices/#", "#", "devices/kitchen/telemetry"} {
		if got := k.subscribe(t, filter); got != packets.ErrNotAuthorized.Code {
			t.Fatalf("subscribe %s: SUBACK %#x, want not authorised", filter, got)
		}
	}

	// Username and token as password.
	g, code := dialV5As(t, addr, "g1", "garage", toks["garage"])
	if code != 0 {
		t.Fatalf("garage by username and password: CONNACK %#x", code)
	}
	if got := g.publish(t, "devices/garage/telemetry", []byte(`{"t":4}`)); got != 0 {
		t.Fatalf("garage own topic: PUBACK %#x", got)
	}

	// MQTT 3.1.1 has no negative PUBACK: another device's topic disconnects.
	opts := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("k-v3").SetUsername(toks["kitchen"]).SetAutoReconnect(false)
	v3 := paho.NewClient(opts)
	if tok := v3.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 connect: %v", tok.Error())
	}
	v3.Publish("devices/garage/telemetry", 1, false, `{"t":5}`).WaitTimeout(2 * time.Second)
	waitFor(t, "v3 client disconnected", func() bool { return !v3.IsConnectionOpen() })

	// Revocation: the connected device is cut off and cannot come back.
	if err := creds.RevokeDevice(context.Background(), "garage"); err != nil {
		t.Fatal(err)
	}
	if n := b.DisconnectDevice("garage"); n != 1 {
		t.Fatalf("disconnected %d connections, want 1", n)
	}
	if pk := g.read(t); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("revoked device got %+v (reason %#x), want DISCONNECT not authorised", pk.FixedHeader, pk.ReasonCode)
	}
	g.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := g.r.ReadByte(); err != io.EOF {
		t.Fatalf("revoked connection still open: %v", err)
	}
	if _, code := dialV5As(t, addr, "g2", "garage", toks["garage"]); code != packets.ErrBadUsernameOrPassword.Code {
		t.Fatalf("revoked token: CONNACK %#x", code)
	}

	w.Close(context.Background())
	if got := storedDevices(t, db); len(got) != 3 || got[0] != "kitchen" || got[1] != "kitchen" || got[2] != "garage" {
		t.Fatalf("stored %v, want kitchen, kitchen (by the me topic), garage", got)
	}
	s := stats.Snapshot()
	if s.Refused[devices.RefusedBadCredentials] != 6 || s.Refused[devices.RefusedSubscribe] != 5 {
		t.Fatalf("refused %v, want 6 bad credentials, 5 subscriptions", s.Refused)
	}
	// kitchen: three device topics over MQTT 5, one over 3.1.1 (the '$'
	// topic is counted as reserved instead).
	if s.DeniedByDevice["kitchen"] != 4 || s.Rejected[devices.ReasonNotAuthorized] != 4 || s.Rejected[devices.ReasonReservedTopic] != 1 {
		t.Fatalf("denied %v, rejected %v", s.DeniedByDevice, s.Rejected)
	}
}

// TestBroker_AnonymousLoopback: without RequireAuth, clients without
// credentials publish as before, but presented credentials must hold and the
// "me" topic needs them.
func TestBroker_AnonymousLoopback(t *testing.T) {
	db, w := MustStore(t)
	creds, toks := mustCredentials(t, db, "kitchen")
	b := MustOpen(t, w, func(b *broker.Broker) { b.Auth = creds })
	anon := dialV5(t, b.ListenAddr())
	if got := anon.publish(t, "devices/anything/telemetry", []byte(`{}`)); got != 0 {
		t.Fatalf("anonymous: PUBACK %#x", got)
	}
	if got := anon.publish(t, "v1/devices/me/telemetry", []byte(`{}`)); got != packets.ErrNotAuthorized.Code {
		t.Fatalf("anonymous me topic: PUBACK %#x, want not authorised", got)
	}
	if _, code := dialV5As(t, b.ListenAddr(), "bad", "thd_nope", ""); code != packets.ErrBadUsernameOrPassword.Code {
		t.Fatalf("bad token: CONNACK %#x", code)
	}
	// An authenticated device keeps to its own topics even here.
	k, _ := dialV5As(t, b.ListenAddr(), "k", toks["kitchen"], "")
	if got := k.publish(t, "devices/other/telemetry", []byte(`{}`)); got != packets.ErrNotAuthorized.Code {
		t.Fatalf("kitchen to other: PUBACK %#x", got)
	}
	w.Close(context.Background())
	if got := storedDevices(t, db); len(got) != 1 || got[0] != "anything" {
		t.Fatalf("stored %v", got)
	}
}

// TestBroker_ReservedTopics: a publish to $SYS is answered, not silently
// dropped: PUBACK "not authorised" on MQTT 5, a plain PUBACK on 3.1.1.
func TestBroker_ReservedTopics(t *testing.T) {
	_, w := MustStore(t)
	var stats devices.Stats
	b := MustOpen(t, w, func(b *broker.Broker) { b.Stats = &stats })
	if got := dialV5(t, b.ListenAddr()).publish(t, "$SYS/broker/load", []byte(`1`)); got != packets.ErrNotAuthorized.Code {
		t.Fatalf("v5: PUBACK %#x", got)
	}
	c := MustConnect(t, b, "v3")
	if tok := c.Publish("$SYS/x", 1, false, "1"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 publish to $SYS not acknowledged: %v", tok.Error())
	}
	if n := stats.Snapshot().Rejected[devices.ReasonReservedTopic]; n != 2 {
		t.Fatalf("reserved_topic=%d, want 2", n)
	}
}

// TestBroker_RateLimit: a device over its token bucket gets "message rate
// too high" and its excess is counted, not stored; others are unaffected.
func TestBroker_RateLimit(t *testing.T) {
	db, w := MustStore(t)
	var stats devices.Stats
	b := MustOpen(t, w, func(b *broker.Broker) { b.DeviceRate, b.DeviceBurst, b.Stats = 1, 5, &stats })
	c := dialV5(t, b.ListenAddr())
	ok, limited := 0, 0
	for i := 0; i < 20; i++ {
		switch code := c.publish(t, "devices/chatty/telemetry", []byte(`{}`)); code {
		case 0:
			ok++
		case packets.ErrMessageRateTooHigh.Code:
			limited++
		default:
			t.Fatalf("PUBACK %#x", code)
		}
	}
	if ok < 5 || ok > 7 || ok+limited != 20 {
		t.Fatalf("%d accepted, %d limited; want the burst of 5 (and a token or two refilled)", ok, limited)
	}
	if got := c.publish(t, "devices/quiet/telemetry", []byte(`{}`)); got != 0 {
		t.Fatalf("another device: PUBACK %#x", got)
	}
	if n := stats.Snapshot().Rejected[devices.ReasonRateLimited]; n != int64(limited) {
		t.Fatalf("rate_limited=%d, want %d", n, limited)
	}
	w.Close(context.Background())
	if got := storedDevices(t, db); len(got) != ok+1 {
		t.Fatalf("stored %d, want %d", len(got), ok+1)
	}
}

// TestBroker_MaxConnections: past the limit a client gets CONNACK "server
// unavailable" and the refusal is counted.
func TestBroker_MaxConnections(t *testing.T) {
	_, w := MustStore(t)
	var stats devices.Stats
	b := MustOpen(t, w, func(b *broker.Broker) { b.MaxConnections, b.Stats = 2, &stats })
	// A device that left its session behind (clean session off) does not
	// hold a connection.
	away := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("away").SetCleanSession(false).SetAutoReconnect(false))
	if tok := away.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	away.Disconnect(0)
	waitFor(t, "the away client disconnected", func() bool { return b.Clients() == 0 })
	MustConnect(t, b, "a")
	MustConnect(t, b, "b")
	// Version pinned: paho otherwise retries a refused connection as MQTT 3.1.
	c := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("c").SetAutoReconnect(false).SetProtocolVersion(4))
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() == nil {
		t.Fatal("third connection accepted past the limit of 2")
	}
	if n := stats.Snapshot().Refused[devices.RefusedTooManyConnections]; n != 1 {
		t.Fatalf("refused=%d, want 1", n)
	}
}

func waitFor(tb testing.TB, what string, f func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBroker_AckOrder: acknowledgements leave in the order the publishes
// came [MQTT-4.6.0-2], refusals included: a refused publish that follows
// publishes still waiting for their commit is answered after their PUBACKs.
func TestBroker_AckOrder(t *testing.T) {
	gw := &gateWriter{c: make(chan *devices.Pending, 10)}
	b := MustOpen(t, gw, func(b *broker.Broker) { b.MaxPayload = 100 })
	c := dialV5(t, b.ListenAddr())
	send := func(id uint16, topic, payload string) {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5,
			TopicName: topic, Payload: []byte(payload), PacketID: id}
		c.send(t, &pk, pk.PublishEncode)
	}
	send(1, "devices/a/telemetry", `{"x":1}`)
	p1 := <-gw.c                                             // waiting for its commit
	send(2, "devices/a/telemetry", strings.Repeat("x", 200)) // too large: refused
	send(3, "$SYS/x", "1")                                   // reserved: refused
	send(4, "devices/a/telemetry", `{"x":4}`)
	p4 := <-gw.c
	c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.r.Peek(1); err == nil {
		t.Fatal("an acknowledgement left before the first publish was committed")
	}
	p1.Done(&p1.Message, nil)
	p4.Done(&p4.Message, nil)
	var got []string
	for i := 0; i < 4; i++ {
		ack := c.read(t)
		got = append(got, fmt.Sprintf("%d:%#x", ack.PacketID, ack.ReasonCode))
	}
	if want := "1:0x0 2:0x97 3:0x87 4:0x0"; strings.Join(got, " ") != want {
		t.Fatalf("acknowledgements %v, want %s", got, want)
	}
}
