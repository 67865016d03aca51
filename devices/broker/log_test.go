package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// TestMochiHandler_NoSecrets: a packet mochi logs (it logs whole packets on
// protocol errors) shows its type and topic, never credentials or payload.
func TestMochiHandler_NoSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(mochiHandler{slog.NewTextHandler(&buf, nil), &devices.Throttle{}})
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{Username: []byte("thd_secret-user"), Password: []byte("thd_secret-pass")}}
	log.Warn("error processing packet", "pk", pk)
	log.Warn("x", "packet", packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "devices/a/telemetry", Payload: []byte("private")})
	out := buf.String()
	if strings.Contains(out, "secret") || strings.Contains(out, "private") {
		t.Fatalf("log leaks a secret or payload:\n%s", out)
	}
	if !strings.Contains(out, "pk.type=Connect") || !strings.Contains(out, "packet.topic=devices/a/telemetry") {
		t.Fatalf("log lacks the packet summary:\n%s", out)
	}
}
