package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
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
}
