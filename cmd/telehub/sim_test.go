package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/telehub/telehub/simulator"
)

func simConfig(m *Main) *simulator.Config {
	cfg := simulator.NewConfig()
	cfg.Broker = m.Broker.URL()
	cfg.HubURL = m.HTTP.URL()
	cfg.Verify = true
	cfg.Ramp = 1000
	return cfg
}

// TestSimulator_Verify: a verified telesim run against the hub finds every
// message stored and pushed live, none lost, duplicated or reordered.
func TestSimulator_Verify(t *testing.T) {
	m := MustRunMain(t)
	cfg := simConfig(m)
	cfg.Devices, cfg.Rate, cfg.Count = 20, 50, 100
	r, err := simulator.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	t.Logf("report: %s", b)
	if r.Sent != 2000 || r.Acked != 2000 || r.Stored != 2000 || r.ReceivedLive != 2000 {
		t.Fatalf("sent %d acked %d stored %d live %d, want 2000 each", r.Sent, r.Acked, r.Stored, r.ReceivedLive)
	}
	if r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 {
		t.Fatalf("lost %d duplicated %d reordered %d, want 0", r.Lost, r.Duplicated, r.Reordered)
	}
	if r.E2ELatency.N != 2000 || r.AckLatency.N != 2000 {
		t.Fatalf("latency samples ack %d e2e %d, want 2000", r.AckLatency.N, r.E2ELatency.N)
	}
}

// TestSimulator_HubRestart: the hub restarts (same ports, same database)
// while a verified fleet publishes QoS 1 with persistent sessions; devices
// reconnect, the verifier's WebSocket resumes, and nothing acknowledged is
// lost or duplicated.
func TestSimulator_HubRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restart test is not short")
	}
	m := MustRunMain(t)
	cfg := simConfig(m)
	cfg.Devices, cfg.Rate, cfg.Duration, cfg.Clean = 20, 20, 6*time.Second, false
	type result struct {
		r   *simulator.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := simulator.Run(context.Background(), cfg)
		done <- result{r, err}
	}()
	waitStored(t, m, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m2 := MustRunMain(t, func(c *Config) {
		c.DB, c.MQTTAddr, c.HTTPAddr = m.Config.DB, m.Broker.ListenAddr(), m.HTTP.ListenAddr()
	})
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	r := res.r
	b, _ := json.Marshal(r)
	t.Logf("report: %s", b)
	if r.Disconnects < int64(cfg.Devices) || r.Connects < 2*int64(cfg.Devices) {
		t.Fatalf("connects %d disconnects %d: the restart did not reach the devices", r.Connects, r.Disconnects)
	}
	if r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 {
		t.Fatalf("lost %d duplicated %d reordered %d, want 0", r.Lost, r.Duplicated, r.Reordered)
	}
	if r.Acked == 0 || r.Stored < r.Acked || r.ReceivedLive < r.Acked {
		t.Fatalf("acked %d stored %d live %d: want everything acknowledged stored and seen", r.Acked, r.Stored, r.ReceivedLive)
	}
	if s := m2.Stats.Snapshot().Stored; s == 0 {
		t.Fatal("the restarted hub stored nothing")
	}
}

// TestMain_Demo: --demo devices publish into the hub from the first second.
func TestMain_Demo(t *testing.T) {
	m := MustRunMain(t, func(c *Config) { c.Demo = 4 })
	checkFor(t, 15*time.Second, func() error {
		var list struct {
			Devices []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"devices"`
		}
		getJSON(t, m.HTTP.URL()+"/api/v1/devices", &list)
		if len(list.Devices) != 4 {
			return fmt.Errorf("%d devices", len(list.Devices))
		}
		for _, d := range list.Devices {
			if d.Status != "online" {
				return fmt.Errorf("%s status %q", d.ID, d.Status)
			}
		}
		return nil
	})
}

// TestSimulator_SecuredHub: against a hub that requires device credentials
// and an API token, a fleet with provisioned tokens publishes and verifies
// with a read token; nothing is lost.
func TestSimulator_SecuredHub(t *testing.T) {
	m := MustRunMain(t, func(c *Config) { c.DeviceAuth, c.APIToken = true, "config-admin-token-0123456789" })
	ctx := context.Background()
	cfg := simConfig(m)
	cfg.Devices, cfg.Rate, cfg.Count = 5, 50, 40
	for i := 0; i < cfg.Devices; i++ {
		tok, err := m.Store.AddDevice(ctx, simulator.DeviceID(cfg.IDPrefix, i))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Tokens = append(cfg.Tokens, tok)
	}
	var err error
	if cfg.HubToken, err = m.Store.AddToken(ctx, "telesim", "read"); err != nil {
		t.Fatal(err)
	}
	r, err := simulator.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Acked != 200 || r.Stored != 200 || r.ReceivedLive != 200 || r.Lost != 0 || r.Duplicated != 0 {
		t.Fatalf("acked %d stored %d live %d lost %d dup %d, want 200, 200, 200, 0, 0", r.Acked, r.Stored, r.ReceivedLive, r.Lost, r.Duplicated)
	}
}

// TestSimulator_Commands: simulated devices answer the pings telesim sends
// through the API (all answered, none lost), a setInterval command changes
// a device's rate, and a shared attribute "interval" is applied.
func TestSimulator_Commands(t *testing.T) {
	m := MustRunMain(t)
	cfg := simConfig(m)
	cfg.Verify = false
	cfg.Devices, cfg.Rate, cfg.Duration, cfg.CommandRate = 20, 2, 4*time.Second, 100
	done := make(chan *simulator.Report, 1)
	go func() {
		r, err := simulator.Run(context.Background(), cfg)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	checkFor(t, 10*time.Second, func() error {
		if _, ok := m.Store.ActivityOf("sim-0020"); !ok {
			return fmt.Errorf("fleet not connected yet")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // the devices' subscriptions
	_, c := sendCommand(t, m, "", "sim-0001", `{"method":"setInterval","params":{"seconds":0.05}}`, "?wait=5s")
	if c.Status != "replied" || string(c.Response) != `{"interval_s":0.05}` {
		t.Fatalf("setInterval: %+v", c)
	}
	request(t, "PUT", m.HTTP.URL()+"/api/v1/devices/sim-0002/attributes/shared", "", `{"interval":0.1}`)
	_, u := sendCommand(t, m, "", "sim-0003", `{"method":"selfDestruct"}`, "?wait=5s")
	if u.Status != "failed" || !strings.Contains(u.Error, "unknown method") {
		t.Fatalf("unknown method: %+v", u)
	}
	r := <-done
	b, _ := json.Marshal(r)
	t.Logf("report: %s", b)
	if r.Commands == nil || r.Commands.Sent < 200 || r.Commands.Lost != 0 || r.Commands.Answered != r.Commands.Sent || r.Commands.RoundTrip.N != r.Commands.Answered {
		t.Fatalf("commands: %+v, want hundreds sent, all answered", r.Commands)
	}
	if r.AttributesApplied < 1 {
		t.Fatalf("attributes applied %d, want the interval", r.AttributesApplied)
	}
	fast, _ := m.Store.FindDevice(context.Background(), "sim-0001")
	slow, _ := m.Store.FindDevice(context.Background(), "sim-0010")
	if fast.MessageCount < 3*slow.MessageCount {
		t.Fatalf("sim-0001 sent %d after setInterval 0.05 s, sim-0010 %d at 0.5 s: rate unchanged", fast.MessageCount, slow.MessageCount)
	}
}
