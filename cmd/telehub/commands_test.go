package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCommand_Backup(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "bk")
	publishN(t, c, "bk", 500)
	out := filepath.Join(t.TempDir(), "copy.db")
	var stdout, stderr bytes.Buffer
	env := func(string) string { return "" }
	if code := runCommand(context.Background(), []string{"backup", "--db", m.Config.DB, out}, env, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	// The copy runs as a hub of its own.
	m2 := MustRunMain(t, func(c *Config) { c.DB = out })
	var d struct {
		MessageCount int `json:"message_count"`
	}
	getJSON(t, m2.HTTP.URL()+"/api/v1/devices/bk", &d)
	if d.MessageCount != 500 {
		t.Fatalf("restored device has %d messages, want 500", d.MessageCount)
	}
	if code := runCommand(context.Background(), []string{"backup", "--db", m.Config.DB, out}, env, &stdout, &stderr); code != 1 {
		t.Fatalf("backup over an existing file: exit %d, want 1", code)
	}
}

func TestCommand_ConfigCheck(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := func(k string) string {
		return map[string]string{"TELEHUB_MQTT_PASSWORD": "s3cret", "TELEHUB_BATCH_MAX": "1000"}[k]
	}
	if code := runCommand(context.Background(), []string{"config", "check", "--http", "127.0.0.1:9999"}, env, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, "s3cret") || !strings.Contains(out, "(set, not shown)") || !strings.Contains(out, "127.0.0.1:9999") || !strings.Contains(out, "1000") {
		t.Fatalf("output:\n%s", out)
	}
	if code := runCommand(context.Background(), []string{"config", "check", "--log-level", "loud"}, env, &stdout, &stderr); code != 2 {
		t.Fatalf("invalid config: exit %d, want 2", code)
	}
	// The hub refuses a non-loopback --http without an API token; so does
	// the check (it once passed it).
	db := filepath.Join(t.TempDir(), "telehub.db")
	stdout.Reset()
	stderr.Reset()
	if code := runCommand(context.Background(), []string{"config", "check", "--db", db, "--http", "0.0.0.0:8080"}, env, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--api-token") {
		t.Fatalf("--http 0.0.0.0 without a token: exit %d, stderr %q; want 2 naming --api-token", code, stderr.String())
	}
	// Credentials in --mqtt-url are not shown.
	stdout.Reset()
	if code := runCommand(context.Background(), []string{"config", "check", "--mqtt-url", "tcp://hub:hunter22@127.0.0.1:1883"}, env, &stdout, &stderr); code != 0 || strings.Contains(stdout.String(), "hunter22") {
		t.Fatalf("exit %d, output:\n%s", code, stdout.String())
	}
}

// TestBackup_API: POST /api/v1/backup returns a consistent copy while
// devices publish; restored in place of --db (the documented procedure), it
// runs as a hub with every message acknowledged before the backup began.
func TestBackup_API(t *testing.T) {
	const admin = "config-admin-token-0123456789"
	m := MustRunMain(t, func(c *Config) { c.APIToken = admin })
	c := mqttConnect(t, m.Broker.URL(), "bk")
	publishN(t, c, "bk", 300)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // keeps publishing during the backup
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c.Publish("devices/busy/telemetry", 1, false, fmt.Sprintf(`{"i":%d}`, i)).WaitTimeout(5 * time.Second)
		}
	}()
	if code, _ := request(t, "POST", m.HTTP.URL()+"/api/v1/backup", "", ""); code != 401 {
		t.Fatalf("backup without a token: %d", code)
	}
	code, body := request(t, "POST", m.HTTP.URL()+"/api/v1/backup", admin, "")
	close(stop)
	<-done
	if code != 200 || !strings.HasPrefix(body, "SQLite format 3\x00") {
		t.Fatalf("backup: %d, %d bytes", code, len(body))
	}
	dir := t.TempDir()
	restored := filepath.Join(dir, "telehub.db")
	if err := os.WriteFile(restored, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	m2 := MustRunMain(t, func(c *Config) { c.DB = restored })
	var d struct {
		MessageCount int `json:"message_count"`
	}
	getJSON(t, m2.HTTP.URL()+"/api/v1/devices/bk", &d)
	if d.MessageCount != 300 {
		t.Fatalf("restored bk has %d messages, want 300", d.MessageCount)
	}
	if err := m2.SQLite.DB.IntegrityCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseSize: no panic; an accepted size is never negative.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "10GB", "500 mb", "1.5TB", "-1", "1e30TB", "NaN", "kb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := parseSize(s); err == nil && n < 0 {
			t.Fatalf("%q: negative %d accepted", s, n)
		}
	})
}
