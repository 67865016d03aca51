package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mqttjsDir holds the MQTT.js interop script and its npm lock file; .ci/run
// installs it with npm ci.
const mqttjsDir = "testdata/mqttjs"

// TestInterop_MQTTjs: MQTT.js, a real client, publishes and subscribes at
// QoS 0, 1 and 2 over MQTT 3.1.1 and 5 on a device topic and a plain one;
// every publish is acknowledged and every message arrives once. The device
// messages are stored.
func TestInterop_MQTTjs(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test")
	}
	node := requireTool(t, "node", "apt-get install nodejs")
	if _, err := os.Stat(filepath.Join(mqttjsDir, "node_modules", "mqtt")); err != nil {
		if os.Getenv("TELEHUB_REQUIRE_TOOLS") != "" {
			t.Fatalf("MQTT.js is not installed but TELEHUB_REQUIRE_TOOLS is set: npm ci --prefix cmd/telehub/%s", mqttjsDir)
		}
		t.Skipf("MQTT.js is not installed; npm ci --prefix cmd/telehub/%s to run this test", mqttjsDir)
	}
	m := MustRunMain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "interop.mjs", "mqtt://"+m.Broker.ListenAddr())
	cmd.Dir = mqttjsDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var res struct {
		OK    bool
		Error string
	}
	if jerr := json.Unmarshal(bytes.TrimSpace(out), &res); jerr != nil || err != nil || !res.OK {
		t.Fatalf("MQTT.js: %v %q\nstdout: %s\nstderr: %s", err, res.Error, out, stderr.String())
	}
	for _, dev := range []string{"mqttjs-v4", "mqttjs-v5"} {
		var page struct{ Messages []json.RawMessage }
		if code := getJSON(t, m.HTTP.URL()+"/api/v1/devices/"+dev+"/messages", &page); code != 200 || len(page.Messages) != 3 {
			t.Fatalf("%s: HTTP %d, %d messages stored, want 3", dev, code, len(page.Messages))
		}
	}
}

// TestInterop_MosquittoClients: mosquitto_sub and mosquitto_pub over MQTT
// 3.1.1 and 5, at QoS 0, 1 and 2, against the embedded broker.
func TestInterop_MosquittoClients(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test")
	}
	pub := requireTool(t, "mosquitto_pub", "apt-get install mosquitto-clients")
	subBin := requireTool(t, "mosquitto_sub", "apt-get install mosquitto-clients")
	m := MustRunMain(t)
	host, port := "127.0.0.1", strings.TrimPrefix(m.Broker.ListenAddr(), "127.0.0.1:")
	for _, v := range []string{"mqttv311", "mqttv5"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sub := exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-V", v, "-q", "2", "-C", "6", "-v",
			"-t", "devices/mq-"+v+"/telemetry", "-t", "mq/"+v+"/plain", "-i", "sub-"+v)
		var out bytes.Buffer
		sub.Stdout = &out
		if err := sub.Start(); err != nil {
			t.Fatal(err)
		}
		checkFor(t, 10*time.Second, func() error { // subscribed: the broker knows the client
			if _, ok := m.Broker.Server().Clients.Get("sub-" + v); !ok {
				return fmt.Errorf("mosquitto_sub not connected")
			}
			return nil
		})
		time.Sleep(200 * time.Millisecond) // its SUBSCRIBE follows the CONNECT
		for _, topic := range []string{"devices/mq-" + v + "/telemetry", "mq/" + v + "/plain"} {
			for q := 0; q <= 2; q++ {
				msg := fmt.Sprintf(`{"q":%d}`, q)
				if b, err := exec.CommandContext(ctx, pub, "-h", host, "-p", port, "-V", v, "-q", fmt.Sprint(q), "-t", topic, "-m", msg).CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_pub %s q%d: %v %s", v, q, err, b)
				}
			}
		}
		if err := sub.Wait(); err != nil {
			t.Fatalf("mosquitto_sub %s: %v, got:\n%s", v, err, out.String())
		}
		for _, topic := range []string{"devices/mq-" + v + "/telemetry", "mq/" + v + "/plain"} {
			for q := 0; q <= 2; q++ {
				if line := fmt.Sprintf(`%s {"q":%d}`, topic, q); !strings.Contains(out.String(), line) {
					t.Fatalf("%s: mosquitto_sub did not get %q:\n%s", v, line, out.String())
				}
			}
		}
	}
}
