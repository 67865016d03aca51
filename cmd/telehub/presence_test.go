package main

import (
	"context"
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
// of silence and online when it speaks again. Each change is recorded as a
// status event: in the device's status, its event log and on the WebSocket,
// never among its messages.
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

	// The WebSocket carried the message and both changes; the changes are
	// not messages (no seq).
	if got := ws.collect(t, 1, 10*time.Second); len(got) != 1 || got[0].Device != "pump" {
		t.Fatalf("messages %+v", got)
	}
	checkFor(t, 5*time.Second, func() error {
		ws.drainStatuses()
		var seen []string
		for _, f := range ws.statuses {
			seen = append(seen, f.Status+"/"+f.Reason)
		}
		if strings.Join(seen, " ") != "online/connected offline/disconnected" {
			return fmt.Errorf("status frames %v", seen)
		}
		return nil
	})
	var d struct {
		MessageCount int `json:"message_count"`
	}
	getJSON(t, m.HTTP.URL()+"/api/v1/devices/pump", &d)
	if d.MessageCount != 1 {
		t.Fatalf("pump has %d messages, want 1", d.MessageCount)
	}
	var log struct{ Events []devices.StatusEvent }
	getJSON(t, m.HTTP.URL()+"/api/v1/devices/pump/events", &log)
	if len(log.Events) != 2 || log.Events[0].Status != "offline" || log.Events[1].Reason != "connected" {
		t.Fatalf("event log %+v", log.Events)
	}

	// A device the broker does not carry (as with an external broker):
	// silence, then a message.
	write := func() {
		now := time.Now().UnixMilli()
		if err := m.Store.Write(context.Background(), &devices.Pending{Message: devices.Message{
			Device: "remote", Topic: "devices/remote/telemetry", Kind: devices.KindTelemetry, TS: now, Received: now, Payload: []byte(`{"x":1}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	write()
	waitStatus(t, m, "remote", "offline")
	write()
	waitStatus(t, m, "remote", "online")
}

// TestPresence_Restart: a device the hub saw connected is offline after the
// hub restarts ("hub restarted"), until it connects again.
func TestPresence_Restart(t *testing.T) {
	dbPath := t.TempDir() + "/telehub.db"
	m := MustRunMain(t, func(c *Config) { c.DB = dbPath })
	c := mqttConnect(t, m.Broker.URL(), "valve-conn")
	publishN(t, c, "valve", 1)
	waitStatus(t, m, "valve", "online")
	m.Close(context.Background()) // the device's connection goes with it, unrecorded
	m2 := MustRunMain(t, func(c *Config) { c.DB = dbPath })
	waitStatus(t, m2, "valve", "offline")
	var log struct{ Events []devices.StatusEvent }
	getJSON(t, m2.HTTP.URL()+"/api/v1/devices/valve/events", &log)
	if len(log.Events) == 0 || log.Events[0].Reason != "hub restarted" {
		t.Fatalf("events %+v", log.Events)
	}
	c2 := mqttConnect(t, m2.Broker.URL(), "valve-conn-2")
	publishN(t, c2, "valve", 1)
	waitStatus(t, m2, "valve", "online")
}

// TestPresence_OneShotStatus: the quick start's
// "mosquitto_pub -r -t devices/kitchen/status -m online" showed the device
// offline a millisecond later (the publisher's disconnect), and its plain
// "online" was served as base64. The status stays what the device said, and
// the payload is served as text.
func TestPresence_OneShotStatus(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "mosquitto_pub")
	if tok := c.Publish("devices/kitchen/status", 1, true, "online"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c.Disconnect(0)
	waitStatus(t, m, "kitchen", "online")
	time.Sleep(300 * time.Millisecond)
	if got := statusOf(t, m, "kitchen"); got != "online" {
		t.Fatalf("after the publisher left: %q, want online", got)
	}
	var page struct {
		Messages []struct {
			Encoding string `json:"encoding"`
			Payload  any    `json:"payload"`
		} `json:"messages"`
	}
	getJSON(t, m.HTTP.URL()+"/api/v1/devices/kitchen/messages", &page)
	if len(page.Messages) != 1 || page.Messages[0].Encoding != "text" || page.Messages[0].Payload != "online" {
		t.Fatalf("messages %+v, want one with the text payload \"online\"", page.Messages)
	}
}
