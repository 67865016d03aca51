package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
)

// statusOf returns a device's status as GET /api/v1/devices/{id} shows it.
func statusOf(tb testing.TB, m *Main, id string) string {
	tb.Helper()
	var d struct{ Status any }
	if code := getJSON(tb, m.HTTP.URL()+"/api/v1/devices/"+id, &d); code != 200 {
		return fmt.Sprintf("(HTTP %d)", code)
	}
	return fmt.Sprint(d.Status)
}

func waitStatus(tb testing.TB, m *Main, id, want string) {
	tb.Helper()
	checkFor(tb, 10*time.Second, func() error {
		if got := statusOf(tb, m, id); got != want {
			return fmt.Errorf("%s is %q, want %q", id, got, want)
		}
		return nil
	})
}

// TestPresence: connections to the embedded broker turn devices online and
// offline; a device heard of otherwise turns offline after --device-timeout
// of silence and online when it speaks again. Each change is a stored status
// message that WebSocket clients receive.
func TestPresence(t *testing.T) {
	m := MustRunMain(t, func(c *Config) { c.DeviceTimeout = 300 * time.Millisecond })
	ws := dialWS(t, m.HTTP.URL(), "device=pump")

	c := mqttConnect(t, m.Broker.URL(), "pump-conn")
	publishN(t, c, "pump", 1)
	waitStatus(t, m, "pump", "online")
	time.Sleep(600 * time.Millisecond) // silent, but connected: stays online
	if got := statusOf(t, m, "pump"); got != "online" {
		t.Fatalf("connected but quiet pump is %q", got)
	}
	c.Disconnect(100)
	waitStatus(t, m, "pump", "offline")

	// The WebSocket saw the telemetry and both status changes. An anonymous
	// client names its device with its first publish, so "online" and that
	// publish are stored in either order.
	frames := ws.collect(t, 3, 10*time.Second)
	var kinds []string
	for _, msg := range frames {
		if msg.Kind == "status" {
			if !strings.HasPrefix(msg.Topic, devices.StatusTopicPrefix) {
				t.Fatalf("status message on topic %q", msg.Topic)
			}
			var p struct{ Status, Reason, Source string }
			json.Unmarshal(msg.Payload, &p)
			kinds = append(kinds, p.Status+"/"+p.Reason+"/"+p.Source)
		} else {
			kinds = append(kinds, "telemetry")
		}
	}
	if got := strings.Join(kinds, " "); got != "telemetry online/connected/hub offline/disconnected/hub" && got != "online/connected/hub telemetry offline/disconnected/hub" {
		t.Fatalf("WebSocket saw %v", kinds)
	}

	// A device the broker does not carry (as with an external broker):
	// silence, then a message.
	write := func() {
		now := time.Now().UnixMilli()
		if err := m.Writer.Write(context.Background(), &devices.Pending{Message: devices.Message{
			Device: "remote", Topic: "devices/remote/telemetry", Kind: devices.KindTelemetry, TS: now, Received: now, Payload: []byte(`{"x":1}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	write()
	waitStatus(t, m, "remote", "offline")
	var d struct {
		LastSeen int64 `json:"last_seen"`
		StatusAt int64 `json:"status_at"`
	}
	getJSON(t, m.HTTP.URL()+"/api/v1/devices/remote", &d)
	if d.StatusAt-d.LastSeen < 300 {
		t.Fatalf("last_seen %d moved with the status note at %d", d.LastSeen, d.StatusAt)
	}
	write()
	waitStatus(t, m, "remote", "online")
}
