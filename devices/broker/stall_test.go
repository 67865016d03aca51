package broker_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices/broker"
)

// TestBroker_StalledClientStallsNoOne: a client with keep alive 0 that
// subscribes to its own topic, publishes big QoS 1 messages and never reads
// once froze every PUBACK of the hub for 50 s: mochi held the client's lock
// while blocked writing to it with no deadline, and the one acker waited for
// that lock. Now the acker never waits on one client, every write has a
// deadline, and keep alive 0 gets the server's (Server Keep Alive).
func TestBroker_StalledClientStallsNoOne(t *testing.T) {
	_, w := MustStore(t)
	b := MustOpen(t, w, func(b *broker.Broker) { b.WriteTimeout = time.Second })

	hog, ack := dial5(t, b.ListenAddr(), packets.ConnectParams{Clean: true, ClientIdentifier: "hog"}, packets.Properties{})
	if ack.ReasonCode != 0 || !ack.Properties.ServerKeepAliveFlag || ack.Properties.ServerKeepAlive != uint16(broker.DefaultMaxKeepAlive/time.Second) {
		t.Fatalf("CONNACK for keep alive 0: code %#x, server keep alive %v %d, want %d", ack.ReasonCode,
			ack.Properties.ServerKeepAliveFlag, ack.Properties.ServerKeepAlive, broker.DefaultMaxKeepAlive/time.Second)
	}
	if code := hog.subscribe(packets.Subscription{Filter: "devices/hog/telemetry", Qos: 1}); code > 2 {
		t.Fatalf("SUBACK %#x", code)
	}
	payload := []byte(`{"blob":"` + string(bytes.Repeat([]byte("x"), 100_000)) + `"}`)
	go func() { // and never read
		for i := 1; i <= 300; i++ {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5,
				TopicName: "devices/hog/telemetry", Payload: payload, PacketID: uint16(i)}
			var buf bytes.Buffer
			pk.PublishEncode(&buf)
			hog.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := hog.conn.Write(buf.Bytes()); err != nil {
				return // the broker gave up on it
			}
		}
	}()

	c := MustConnect(t, b, "steady")
	var slowest time.Duration
	for i := 0; i < 15; i++ {
		start := time.Now()
		tok := c.Publish("devices/steady/telemetry", 1, false, fmt.Sprintf(`{"n":%d}`, i))
		if !tok.WaitTimeout(3 * time.Second) {
			t.Fatalf("publish %d of another device: no PUBACK within 3 s", i)
		}
		slowest = max(slowest, time.Since(start))
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("slowest PUBACK of the other device: %v", slowest)

	// The hog is cut off: its connection ends once what was sent is read.
	hog.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, hog.conn); err != nil && !isReset(err) {
		t.Fatalf("reading the hog's connection: %v, want it closed by the broker", err)
	}
}

// isReset reports whether err ended a connection (reset by the peer)
// rather than timing out.
func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// TestBroker_SilentConnectionsClosed: mochi waits for a CONNECT without a
// deadline, so connections that never speak piled up (two goroutines
// each). A connection that sends no CONNECT within ConnectTimeout is
// closed.
func TestBroker_SilentConnectionsClosed(t *testing.T) {
	_, w := MustStore(t)
	b := MustOpen(t, w, func(b *broker.Broker) { b.ConnectTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp", b.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
		t.Fatalf("a silent connection was not closed: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, want about 300 ms", d)
	}
	// A client that does speak in time is not affected.
	if got := dialV5(t, b.ListenAddr()).publish(t, "devices/x/telemetry", []byte(`{"v":1}`)); got != 0 {
		t.Fatalf("PUBACK %#x", got)
	}
}
