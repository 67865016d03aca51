package broker_test

// MQTT 5 conformance of the embedded broker, over raw packets: each test is
// named after the statements of the spec (OASIS MQTT Version 5.0) it checks,
// on plain topics, which mochi handles, and on device topics, which go
// through the hub's durable path and must behave the same.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/broker"
)

// mqtt5 is a raw MQTT 5 connection for conformance tests.
type mqtt5 struct {
	tb      testing.TB
	conn    net.Conn
	r       *bufio.Reader
	id      uint16
	pending []packets.Packet // read while waiting for something else
	noAck   bool             // do not acknowledge QoS 1 messages (flow control)
}

// dial5 connects with cp and props and returns the client and its CONNACK.
func dial5(tb testing.TB, addr string, cp packets.ConnectParams, props packets.Properties) (*mqtt5, packets.Packet) {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	c := &mqtt5{tb: tb, conn: conn, r: bufio.NewReader(conn)}
	cp.ProtocolName = []byte("MQTT") // keep alive 0 gets the server's (DefaultMaxKeepAlive)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5, Connect: cp, Properties: props}
	c.send(&pk, pk.ConnectEncode)
	ack := c.next(5 * time.Second)
	if ack == nil || ack.FixedHeader.Type != packets.Connack {
		tb.Fatalf("no CONNACK: %+v", ack)
	}
	return c, *ack
}

func (c *mqtt5) send(pk *packets.Packet, encode func(*bytes.Buffer) error) {
	c.tb.Helper()
	var buf bytes.Buffer
	if err := encode(&buf); err != nil {
		c.tb.Fatal(err)
	}
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.tb.Fatal(err)
	}
}

// next reads the next packet, or returns nil when none comes within d (or
// the connection ended).
func (c *mqtt5) next(d time.Duration) *packets.Packet {
	c.tb.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	hb, err := c.r.ReadByte()
	if err != nil {
		return nil
	}
	pk := &packets.Packet{ProtocolVersion: 5}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		c.tb.Fatal(err)
	}
	if pk.FixedHeader.Remaining, _, err = packets.DecodeLength(c.r); err != nil {
		c.tb.Fatal(err)
	}
	body := make([]byte, pk.FixedHeader.Remaining)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.tb.Fatal(err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		c.tb.Fatal(err)
	}
	return pk
}

// closed reports whether the server ends the connection within d.
func (c *mqtt5) closed(d time.Duration) bool {
	c.conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c.r)
	var ne net.Error
	return err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

// subscribe subscribes with the given options and returns the SUBACK code.
func (c *mqtt5) subscribe(sub packets.Subscription) byte {
	c.tb.Helper()
	c.id++
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 5,
		PacketID: c.id, Filters: packets.Subscriptions{sub}}
	c.send(&pk, pk.SubscribeEncode)
	for {
		ack := c.next(5 * time.Second)
		if ack == nil {
			c.tb.Fatal("no SUBACK")
		}
		if ack.FixedHeader.Type == packets.Suback {
			return ack.ReasonCodes[0]
		}
		c.pending = append(c.pending, *ack) // a retained message may come first
	}
}

// publish sends a publish and completes its QoS flow; it returns the
// PUBACK's or PUBREC's reason code (0 for QoS 0).
func (c *mqtt5) publish(topic string, payload []byte, qos byte, retain bool, props packets.Properties) byte {
	c.tb.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain}, ProtocolVersion: 5,
		TopicName: topic, Payload: payload, Properties: props,
		Mods: packets.Mods{AllowResponseInfo: true}} // mochi's encoder leaves response topics out otherwise
	if qos > 0 {
		c.id++
		pk.PacketID = c.id
	}
	c.send(&pk, pk.PublishEncode)
	if qos == 0 {
		return 0
	}
	for {
		ack := c.next(5 * time.Second)
		if ack == nil {
			c.tb.Fatalf("publish %s: no acknowledgement", topic)
		}
		switch {
		case ack.FixedHeader.Type == packets.Puback && ack.PacketID == pk.PacketID:
			return ack.ReasonCode
		case ack.FixedHeader.Type == packets.Pubrec && ack.PacketID == pk.PacketID:
			if ack.ReasonCode >= 0x80 {
				return ack.ReasonCode
			}
			rel := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, ProtocolVersion: 5, PacketID: pk.PacketID}
			c.send(&rel, rel.PubrelEncode)
		case ack.FixedHeader.Type == packets.Pubcomp && ack.PacketID == pk.PacketID:
			return 0
		default:
			c.pending = append(c.pending, *ack)
		}
	}
}

// message returns the next PUBLISH that arrives within d (acknowledging it
// at QoS 1), or nil.
func (c *mqtt5) message(d time.Duration) *packets.Packet {
	c.tb.Helper()
	for len(c.pending) > 0 {
		pk := c.pending[0]
		c.pending = c.pending[1:]
		if pk.FixedHeader.Type == packets.Publish {
			c.ack(&pk)
			return &pk
		}
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		pk := c.next(time.Until(deadline))
		if pk == nil {
			return nil
		}
		if pk.FixedHeader.Type == packets.Publish {
			c.ack(pk)
			return pk
		}
	}
	return nil
}

func (c *mqtt5) ack(pk *packets.Packet) {
	if pk.FixedHeader.Qos == 1 && !c.noAck {
		a := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: 5, PacketID: pk.PacketID}
		c.send(&a, a.PubackEncode)
	}
}

// plainBroker is the embedded broker on a random port, with a real store.
func plainBroker(t *testing.T, configure ...func(*broker.Broker)) string {
	t.Helper()
	_, w := MustStore(t)
	return MustOpen(t, w, configure...).ListenAddr()
}

// both runs f on a plain topic and on a device topic.
func both(t *testing.T, f func(t *testing.T, topic string)) {
	t.Run("plain", func(t *testing.T) { f(t, "home/lights") })
	t.Run("device", func(t *testing.T) { f(t, "devices/lamp/telemetry") })
}

// TestMQTT5_Retained_3_3_1_5_to_7: a retained message is kept and sent to
// new subscriptions [MQTT-3.3.1-5]; a new one replaces it; an empty one
// clears it and is not stored [MQTT-3.3.1-6, -7]; a '#' subscription does
// not see '$' topics [MQTT-4.7.2-1].
func TestMQTT5_Retained_3_3_1_5_to_7(t *testing.T) {
	t.Parallel()
	addr := plainBroker(t)
	both(t, func(t *testing.T, topic string) {
		pub, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "pub-" + topic}, packets.Properties{})
		pub.publish(topic, []byte(`{"v":1}`), 1, true, packets.Properties{})
		pub.publish(topic, []byte(`{"v":2}`), 1, true, packets.Properties{})
		// mochi writes a plain publish's PUBACK before it forwards the
		// publish: a subscription made in between gets the message twice,
		// retained and live (as MQTT allows). The broker reads a client's
		// packets in order, so once a later publish is acknowledged the
		// forward of {"v":2} is done.
		pub.publish("test/barrier", []byte("x"), 1, false, packets.Properties{})
		sub, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "sub-" + topic}, packets.Properties{})
		sub.subscribe(packets.Subscription{Filter: "#", Qos: 1})
		var got []string
		for m := sub.message(3 * time.Second); m != nil; m = sub.message(300 * time.Millisecond) { // the first: a loaded machine may be slow
			if m.TopicName == "test/barrier" {
				continue // the barrier itself, forwarded live: its PUBACK came before its forward
			}
			got = append(got, m.TopicName+"="+string(m.Payload))
			if m.TopicName[0] == '$' {
				t.Fatalf("'#' delivered %s [MQTT-4.7.2-1]", m.TopicName)
			}
		}
		if len(got) != 1 || got[0] != topic+`={"v":2}` {
			t.Fatalf("retained on subscribe: %v, want only the replacement", got)
		}
		pub.publish(topic, nil, 1, true, packets.Properties{})                   // clears
		pub.publish("test/barrier", []byte("x"), 1, false, packets.Properties{}) // its forward is done (above)
		late, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "late-" + topic}, packets.Properties{})
		late.subscribe(packets.Subscription{Filter: topic, Qos: 1})
		if m := late.message(500 * time.Millisecond); m != nil {
			t.Fatalf("after clearing: got %q, want no retained message", m.Payload)
		}
	})
}

// TestMQTT5_SubscriptionOptions_3_8_3_1: No Local [MQTT-3.8.3-3], Retain As
// Published [MQTT-3.3.1-12, -13] and Retain Handling 0, 1, 2 [MQTT-3.3.1-9,
// -10, -11].
func TestMQTT5_SubscriptionOptions_3_8_3_1(t *testing.T) {
	t.Parallel()
	addr := plainBroker(t)
	both(t, func(t *testing.T, topic string) {
		c, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "self-" + topic}, packets.Properties{})
		c.subscribe(packets.Subscription{Filter: topic, Qos: 1, NoLocal: true})
		c.publish(topic, []byte(`{"v":1}`), 1, false, packets.Properties{})
		if m := c.message(500 * time.Millisecond); m != nil {
			t.Fatal("No Local: the publisher got its own message")
		}

		pub, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "rap-pub-" + topic}, packets.Properties{})
		rap, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "rap-" + topic}, packets.Properties{})
		plain, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "norap-" + topic}, packets.Properties{})
		rap.subscribe(packets.Subscription{Filter: topic, Qos: 1, RetainAsPublished: true, RetainHandling: 2})
		plain.subscribe(packets.Subscription{Filter: topic, Qos: 1, RetainHandling: 2})
		pub.publish(topic, []byte(`{"v":2}`), 1, true, packets.Properties{})
		if m := rap.message(2 * time.Second); m == nil || !m.FixedHeader.Retain {
			t.Fatalf("Retain As Published: %+v, want the retain flag kept", m)
		}
		if m := plain.message(2 * time.Second); m == nil || m.FixedHeader.Retain {
			t.Fatalf("without Retain As Published: %+v, want the retain flag cleared", m)
		}

		for _, tt := range []struct {
			rh           byte
			first, again bool // retained message sent on subscribing, and on subscribing again
		}{{0, true, true}, {1, true, false}, {2, false, false}} {
			s, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "rh-" + topic + string('0'+tt.rh)}, packets.Properties{})
			s.subscribe(packets.Subscription{Filter: topic, Qos: 1, RetainHandling: tt.rh})
			if got := s.message(500*time.Millisecond) != nil; got != tt.first {
				t.Fatalf("Retain Handling %d, new subscription: retained sent %v, want %v", tt.rh, got, tt.first)
			}
			s.subscribe(packets.Subscription{Filter: topic, Qos: 1, RetainHandling: tt.rh})
			if got := s.message(500*time.Millisecond) != nil; got != tt.again {
				t.Fatalf("Retain Handling %d, existing subscription: retained sent %v, want %v", tt.rh, got, tt.again)
			}
		}
		pub.publish(topic, nil, 1, true, packets.Properties{})
	})
}

// TestMQTT5_Properties_3_3_2: the Response Topic and Correlation Data
// [MQTT-3.3.2-15, -16] (request/response, section 4.10), User Properties in
// order [MQTT-3.3.2-17, -18], Payload Format Indicator [MQTT-3.3.2-4],
// Content Type [MQTT-3.3.2-20] and Message Expiry [MQTT-3.3.2-6] reach the
// subscriber unchanged.
func TestMQTT5_Properties_3_3_2(t *testing.T) {
	addr := plainBroker(t)
	both(t, func(t *testing.T, topic string) {
		sub, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "psub-" + topic}, packets.Properties{})
		sub.subscribe(packets.Subscription{Filter: topic, Qos: 1})
		pub, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "ppub-" + topic}, packets.Properties{})
		props := packets.Properties{
			ResponseTopic: "replies/42", CorrelationData: []byte{1, 2, 3},
			User:          []packets.UserProperty{{Key: "b", Val: "2"}, {Key: "a", Val: "1"}, {Key: "b", Val: "3"}},
			PayloadFormat: 1, PayloadFormatFlag: true, ContentType: "application/json",
			MessageExpiryInterval: 60,
		}
		if code := pub.publish(topic, []byte(`{"v":1}`), 1, false, props); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
		m := sub.message(2 * time.Second)
		if m == nil {
			t.Fatal("not forwarded")
		}
		p := m.Properties
		if p.ResponseTopic != "replies/42" || !bytes.Equal(p.CorrelationData, []byte{1, 2, 3}) {
			t.Errorf("response topic %q, correlation data %v", p.ResponseTopic, p.CorrelationData)
		}
		if len(p.User) != 3 || p.User[0] != (packets.UserProperty{Key: "b", Val: "2"}) || p.User[1].Key != "a" || p.User[2].Val != "3" {
			t.Errorf("user properties %v, want them in order", p.User)
		}
		if !p.PayloadFormatFlag || p.PayloadFormat != 1 || p.ContentType != "application/json" {
			t.Errorf("payload format %v %d, content type %q", p.PayloadFormatFlag, p.PayloadFormat, p.ContentType)
		}
		if p.MessageExpiryInterval == 0 || p.MessageExpiryInterval > 60 {
			t.Errorf("message expiry %d, want 1..60", p.MessageExpiryInterval)
		}
	})
}

// TestMQTT5_KeepAlive_3_1_2_22: a client silent for one and a half times its
// keep alive is disconnected and its will is published [MQTT-3.1.2-22,
// MQTT-3.1.2-8].
func TestMQTT5_KeepAlive_3_1_2_22(t *testing.T) {
	t.Parallel()
	addr := plainBroker(t)
	watch, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "watch"}, packets.Properties{})
	watch.subscribe(packets.Subscription{Filter: "wills/#", Qos: 1})
	start := time.Now()
	quiet, ack := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "quiet", Keepalive: 1,
		WillFlag: true, WillTopic: "wills/quiet", WillPayload: []byte("gone"), WillQos: 1}, packets.Properties{})
	if ack.ReasonCode != 0 || ack.Properties.ServerKeepAliveFlag {
		t.Fatalf("CONNACK %#x, server keep alive %v: a keep alive within the bounds is kept as asked", ack.ReasonCode, ack.Properties.ServerKeepAliveFlag)
	}
	if !quiet.closed(5 * time.Second) {
		t.Fatal("a silent client was not disconnected")
	}
	if d := time.Since(start); d < time.Second || d > 3*time.Second {
		t.Fatalf("disconnected after %v, want about 1.5 s", d)
	}
	if m := watch.message(2 * time.Second); m == nil || string(m.Payload) != "gone" {
		t.Fatalf("will: %+v", m)
	}
}

// TestMQTT5_SessionExpiry_3_1_2_11: a session with an expiry outlives its
// connection for that long and no longer [MQTT-3.1.2-23]; messages for it
// are kept meanwhile [MQTT-3.1.2-5].
func TestMQTT5_SessionExpiry_3_1_2_11(t *testing.T) {
	t.Parallel()
	addr := plainBroker(t)
	props := packets.Properties{SessionExpiryInterval: 2, SessionExpiryIntervalFlag: true}
	s, _ := dial5(t, addr, packets.ConnectParams{ClientIdentifier: "napper"}, props)
	s.subscribe(packets.Subscription{Filter: "wake/#", Qos: 1})
	s.conn.Close()
	time.Sleep(100 * time.Millisecond)
	pub, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "waker"}, packets.Properties{})
	pub.publish("wake/up", []byte("now"), 1, false, packets.Properties{})
	s, ack := dial5(t, addr, packets.ConnectParams{ClientIdentifier: "napper"}, props)
	if !ack.SessionPresent {
		t.Fatal("the session did not outlive its connection")
	}
	if m := s.message(2 * time.Second); m == nil || string(m.Payload) != "now" {
		t.Fatalf("queued message: %+v", m)
	}
	s.conn.Close()
	time.Sleep(4 * time.Second) // the expiry, and the broker's once-a-second sweep
	_, ack = dial5(t, addr, packets.ConnectParams{ClientIdentifier: "napper"}, props)
	if ack.SessionPresent {
		t.Fatal("the session outlived its expiry")
	}
}

// TestMQTT5_WillDelay_3_1_3_9: a will with a delay is published after the
// delay [MQTT-3.1.3-9], and not at all when the client reconnects first.
func TestMQTT5_WillDelay_3_1_3_9(t *testing.T) {
	t.Parallel()
	addr := plainBroker(t)
	watch, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "watch2"}, packets.Properties{})
	watch.subscribe(packets.Subscription{Filter: "wills/#", Qos: 1})
	props := packets.Properties{SessionExpiryInterval: 30, SessionExpiryIntervalFlag: true}
	will := packets.ConnectParams{ClientIdentifier: "flaky", WillFlag: true, WillTopic: "wills/flaky", WillPayload: []byte("gone"), WillQos: 1,
		WillProperties: packets.Properties{WillDelayInterval: 2}}
	c, _ := dial5(t, addr, will, props)
	c.conn.Close()
	if m := watch.message(time.Second); m != nil {
		t.Fatal("the will came before its delay")
	}
	dial5(t, addr, will, props) // back within the delay
	if m := watch.message(3 * time.Second); m != nil {
		t.Fatal("the will came although the client reconnected")
	}
	c, _ = dial5(t, addr, packets.ConnectParams{ClientIdentifier: "flaky2", WillFlag: true, WillTopic: "wills/flaky2", WillPayload: []byte("gone"), WillQos: 1,
		WillProperties: packets.Properties{WillDelayInterval: 1}}, props)
	c.conn.Close()
	if m := watch.message(4 * time.Second); m == nil || m.TopicName != "wills/flaky2" {
		t.Fatalf("delayed will: %+v", m)
	}
}

// TestMQTT5_ReceiveMaximum_3_3_4_7: a client that has more unacknowledged
// QoS 1 publishes than the server's Receive Maximum is disconnected with
// 0x93 [MQTT-3.3.4-7], also on device topics, which the hub acknowledges
// after commit; and the server sends a client no more unacknowledged
// publishes than the client's Receive Maximum [MQTT-3.3.4-9].
func TestMQTT5_ReceiveMaximum_3_3_4_7(t *testing.T) {
	gw := &gateWriter{c: make(chan *devices.Pending, 100)}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.ReceiveMaximum = 5
	b := MustOpen(t, gw, func(b *broker.Broker) { b.Options = &mqtt.Options{Capabilities: caps} })
	c, ack := dial5(t, b.ListenAddr(), packets.ConnectParams{Clean: true, ClientIdentifier: "greedy"}, packets.Properties{})
	if ack.Properties.ReceiveMaximum != 5 {
		t.Fatalf("CONNACK Receive Maximum %d, want 5", ack.Properties.ReceiveMaximum)
	}
	for i := 1; i <= 6; i++ { // held by the writer: none is acknowledged
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5,
			TopicName: "devices/g/telemetry", Payload: []byte(`{"v":1}`), PacketID: uint16(i)}
		c.send(&pk, pk.PublishEncode)
	}
	got := c.next(5 * time.Second)
	if got == nil || got.FixedHeader.Type != packets.Disconnect || got.ReasonCode != packets.ErrReceiveMaximum.Code {
		t.Fatalf("after 6 unacknowledged publishes: %+v, want DISCONNECT 0x93", got)
	}

	_, w := MustStore(t)
	addr := MustOpen(t, w).ListenAddr()
	slow, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "slow"}, packets.Properties{ReceiveMaximum: 2})
	slow.noAck = true
	slow.subscribe(packets.Subscription{Filter: "burst/#", Qos: 1})
	pub, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "burster"}, packets.Properties{})
	for i := 0; i < 5; i++ {
		pub.publish("burst/x", []byte{byte(i)}, 1, false, packets.Properties{})
	}
	n := 0
	for slow.message(500*time.Millisecond) != nil {
		n++
	}
	if n != 2 {
		t.Fatalf("%d unacknowledged publishes sent to a client with Receive Maximum 2", n)
	}
}

// TestMQTT5_PlainForwarding_QoS: plain broker traffic goes between ordinary
// clients at QoS 0, 1 and 2 exactly as on a plain broker, and is not stored.
func TestMQTT5_PlainForwarding_QoS(t *testing.T) {
	db, w := MustStore(t)
	addr := MustOpen(t, w).ListenAddr()
	sub, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "qsub"}, packets.Properties{})
	sub.subscribe(packets.Subscription{Filter: "q/#", Qos: 2})
	pub, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "qpub"}, packets.Properties{})
	for qos := byte(0); qos <= 2; qos++ {
		if code := pub.publish("q/x", []byte{'0' + qos}, qos, false, packets.Properties{}); code != 0 {
			t.Fatalf("QoS %d: reason %#x", qos, code)
		}
		m := sub.message(2 * time.Second)
		if m == nil || m.FixedHeader.Qos != qos || string(m.Payload) != string('0'+qos) {
			t.Fatalf("QoS %d: got %+v", qos, m)
		}
		if qos == 2 { // complete the flow towards the subscriber
			rec := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, ProtocolVersion: 5, PacketID: m.PacketID}
			sub.send(&rec, rec.PubrecEncode)
			if rel := sub.next(2 * time.Second); rel == nil || rel.FixedHeader.Type != packets.Pubrel {
				t.Fatalf("no PUBREL: %+v", rel)
			}
		}
	}
	if rows, _ := rawQuery(t, db, `SELECT count(*) FROM messages`); rows[0] != "0" {
		t.Fatalf("plain traffic stored: %v rows", rows)
	}
}

// TestMQTT5_ProblemInformation_3_1_2_29: a refusal carries a reason string
// only where the client allows problem information [MQTT-3.1.2-29], and
// never one that would make the packet larger than the client's Maximum
// Packet Size [MQTT-3.1.2-24, 3.4.2.2.2].
func TestMQTT5_ProblemInformation_3_1_2_29(t *testing.T) {
	addr := plainBroker(t)
	for _, tt := range []struct {
		name   string
		props  packets.Properties
		reason bool
	}{
		{"default", packets.Properties{}, true},
		{"no problem information", packets.Properties{RequestProblemInfo: 0, RequestProblemInfoFlag: true}, false},
		{"maximum packet size 16", packets.Properties{MaximumPacketSize: 16}, false},
	} {
		c, _ := dial5(t, addr, packets.ConnectParams{Clean: true, ClientIdentifier: "pi-" + tt.name}, tt.props)
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, TopicName: "$foo", Payload: []byte("x"), PacketID: 1}
		c.send(&pk, pk.PublishEncode)
		ack := c.next(2 * time.Second)
		if ack == nil || ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != packets.ErrNotAuthorized.Code {
			t.Fatalf("%s: %+v, want PUBACK 0x87", tt.name, ack)
		}
		if got := ack.Properties.ReasonString != ""; got != tt.reason {
			t.Fatalf("%s: reason string %q, want one: %v", tt.name, ack.Properties.ReasonString, tt.reason)
		}
	}
}
