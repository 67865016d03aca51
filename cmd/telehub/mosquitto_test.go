package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireTool returns the path of an external program a test needs. Where it
// is missing the test is skipped with a message, unless TELEHUB_REQUIRE_TOOLS
// is set (as .ci/run does), where a missing tool fails the test.
func requireTool(tb testing.TB, name, install string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("TELEHUB_REQUIRE_TOOLS") != "" {
			tb.Fatalf("%s not found but TELEHUB_REQUIRE_TOOLS is set: %s", name, install)
		}
		tb.Skipf("%s not found; %s to run this test", name, install)
	}
	return path
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// MustRunMosquitto starts Mosquitto on a random loopback port and returns
// its URL. Unlimited in-flight and queued messages let the hub's persistent
// session keep everything published while the hub is away (Mosquitto's
// defaults are 20 in flight and 1,000 queued).
func MustRunMosquitto(tb testing.TB) string {
	tb.Helper()
	return MustRunMosquittoOn(tb, freePort(tb))
}

// MustRunMosquittoOn starts Mosquitto on 127.0.0.1:port.
func MustRunMosquittoOn(tb testing.TB, port int) string {
	tb.Helper()
	bin := requireTool(tb, "mosquitto", "apt-get install mosquitto")
	dir := tb.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
`, port)), 0o644)
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	checkFor(tb, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return "tcp://" + addr
}

// TestMosquitto_Interop: with Mosquitto as the external broker, devices
// publish QoS 1 while the hub is restarted; everything Mosquitto accepted is
// stored afterwards.
func TestMosquitto_Interop(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test is not short")
	}
	url := MustRunMosquitto(t)
	dbPath := filepath.Join(t.TempDir(), "telehub.db")
	run := func() *Main {
		return MustRunMain(t, func(c *Config) {
			c.DB = dbPath
			c.MQTTURL = url
			c.MQTTClientID = "telehub-interop"
		})
	}
	m := run()
	checkFor(t, 10*time.Second, m.Ready)

	const nDevices, perDevice = 5, 2000
	var wg sync.WaitGroup
	acked := make([]int, nDevices)
	for d := 0; d < nDevices; d++ {
		c := mqttConnect(t, url, fmt.Sprint("interop-", d))
		wg.Add(1)
		go func() {
			defer wg.Done()
			// In chunks, so that publishing spans the restart.
			for chunk := 0; chunk < 10; chunk++ {
				toks := make([]func() bool, 0, perDevice/10)
				for i := chunk * perDevice / 10; i < (chunk+1)*perDevice/10; i++ {
					tok := c.Publish(fmt.Sprintf("devices/interop-%d/telemetry", d), 1, false, fmt.Sprintf(`{"n":%d}`, i))
					toks = append(toks, func() bool { return tok.WaitTimeout(30*time.Second) && tok.Error() == nil })
				}
				for _, ok := range toks {
					if ok() {
						acked[d]++
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	// Restart the hub in the middle of the stream.
	waitStored(t, m, nDevices*perDevice/4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m2 := run()
	checkFor(t, 10*time.Second, m2.Ready)
	wg.Wait()
	for d, n := range acked {
		if n != perDevice {
			t.Fatalf("device %d: Mosquitto acknowledged %d of %d", d, n, perDevice)
		}
	}

	var missing, dups int
	checkFor(t, 30*time.Second, func() error {
		seen, err := storedN(dbPath)
		if err != nil {
			return err
		}
		missing, dups = 0, 0
		for d := 0; d < nDevices; d++ {
			for i := 0; i < perDevice; i++ {
				switch n := seen[deviceN{fmt.Sprint("interop-", d), i}]; {
				case n == 0:
					missing++
				case n > 1:
					dups += n - 1
				}
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d messages missing", missing, nDevices*perDevice)
		}
		return nil
	})
	t.Logf("published %d through Mosquitto across a hub restart: missing %d, duplicates %d", nDevices*perDevice, missing, dups)
	if dups > 0 {
		t.Errorf("%d duplicates after a graceful restart, want 0", dups)
	}
}

// TestMosquitto_UnreachableAtStart: the hub starts while its external broker
// is down, reports not ready, connects when the broker appears, and stores
// what devices publish then.
func TestMosquitto_UnreachableAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test is not short")
	}
	requireTool(t, "mosquitto", "apt-get install mosquitto")
	port := freePort(t)
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	m := MustRunMain(t, func(c *Config) { c.MQTTURL = url; c.MQTTClientID = "telehub-late" })
	resp, err := http.Get(m.HTTP.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz=%d with the broker down, want 503", resp.StatusCode)
	}
	started := time.Now()
	MustRunMosquittoOn(t, port)
	checkFor(t, 30*time.Second, m.Ready)
	t.Logf("ready %v after the broker appeared", time.Since(started).Round(time.Millisecond))
	c := mqttConnect(t, url, "late-device")
	if n := publishN(t, c, "late", 200); n != 200 {
		t.Fatalf("acked %d of 200", n)
	}
	waitStored(t, m, 200)
}

// TestMosquitto_Commands: with Mosquitto as the external broker, a command
// goes to the device through it and the device's answer comes back through
// the hub's subscription; shared attributes are retained there for the
// device to get when it subscribes; client attributes it publishes are
// stored.
func TestMosquitto_Commands(t *testing.T) {
	url := MustRunMosquitto(t)
	m := MustRunMain(t, func(c *Config) { c.MQTTURL, c.MQTTClientID = url, "telehub-cmds" })
	checkFor(t, 10*time.Second, m.Ready)
	dev := mqttConnect(t, url, "boiler")
	answerCommands(t, dev, "boiler")
	_, c := sendCommand(t, m, "", "boiler", `{"method":"setInterval","params":{"seconds":2}}`, "?wait=10s")
	if c.Status != "replied" || string(c.Response) != `{"echo":{"seconds":2}}` || !strings.HasPrefix(c.path(), "queued>sent>replied") {
		t.Fatalf("round trip through Mosquitto: %+v (%s)", c, c.path())
	}
	request(t, "PUT", m.HTTP.URL()+"/api/v1/devices/boiler/attributes/shared", "", `{"target":60}`)
	var desired inbox
	checkFor(t, 10*time.Second, func() error {
		// retained: a subscription made after the change gets it
		sub := mqttConnect(t, url, fmt.Sprint("boiler-late-", time.Now().UnixNano()))
		subscribe(t, sub, "devices/boiler/attributes/desired", desired.handler)
		time.Sleep(100 * time.Millisecond)
		sub.Disconnect(0)
		desired.mu.Lock()
		defer desired.mu.Unlock()
		if len(desired.got) == 0 || desired.got[len(desired.got)-1] != `devices/boiler/attributes/desired {"target":60}` {
			return fmt.Errorf("retained desired attributes: %v", desired.got)
		}
		return nil
	})
	dev.Publish("devices/boiler/attributes", 1, false, `{"fw":"3.0"}`).WaitTimeout(10 * time.Second)
	checkFor(t, 10*time.Second, func() error {
		a, err := m.Store.Attributes(context.Background(), "boiler")
		if err != nil || string(a.Client["fw"].Value) != `"3.0"` {
			return fmt.Errorf("client attributes %+v %v", a, err)
		}
		return nil
	})
}
