package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/postgres/pgtest"
)

// TestPostgres_RestartUnderLoad: devices publish at QoS 1, one message in
// flight each, while PostgreSQL stops at once (as in a crash) and comes
// back 2 s later. Acknowledgements pause, /readyz says why, and every
// acknowledged message is stored, once.
func TestPostgres_RestartUnderLoad(t *testing.T) {
	db := pgtest.NewDB(t)
	m := MustRunMain(t, func(c *Config) { c.DB = db })
	const nDevices = 5
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	for d := 0; d < nDevices; d++ {
		c := mqttConnect(t, m.Broker.URL(), fmt.Sprint("pg-", d))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100_000 && ctx.Err() == nil; i++ {
				body := fmt.Sprintf(`{"d":%d,"n":%d}`, d, i)
				tok := c.Publish(fmt.Sprintf("devices/pg-%d/telemetry", d), 1, false, body)
				if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
					return
				}
				mu.Lock()
				acked[body] = true
				mu.Unlock()
			}
		}()
	}
	waitStored(t, m, 500)

	restarted := make(chan error, 1)
	go func() { restarted <- pgtest.Current(t).Restart("immediate", 2*time.Second) }()
	// While the server is down, the hub says it is not ready, and why.
	checkFor(t, 20*time.Second, func() error {
		resp, err := http.Get(m.HTTP.URL() + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "store failing") {
			return fmt.Errorf("/readyz %d %s", resp.StatusCode, body)
		}
		return nil
	})
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	// Back: acknowledgements resume.
	stored := m.Stats.Snapshot().Stored
	waitStored(t, m, stored+500)
	checkFor(t, 20*time.Second, func() error { return m.Ready() })
	stop()
	wg.Wait()

	seen := map[string]int{}
	from, to := devices.AllTime()
	for d := 0; d < nDevices; d++ {
		f := devices.MessageFilter{Device: fmt.Sprint("pg-", d), From: from, To: to, Limit: 100_000}
		msgs, err := m.Store.ListMessages(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range msgs {
			seen[string(msg.Payload)]++
		}
	}
	for body := range acked {
		if seen[body] == 0 {
			t.Fatalf("acknowledged %s is not stored", body)
		}
	}
	// A COMMIT whose answer is lost with the connection is looked up by
	// its token before it is tried again: nothing is stored twice.
	for body, n := range seen {
		if n > 1 {
			t.Fatalf("%s stored %d times", body, n)
		}
	}
	if m.Store.CommitFailures() == 0 {
		t.Fatal("no commit failed: the restart was not under load")
	}
	t.Logf("%d acknowledged, %d stored, %d failed commit attempts", len(acked), len(seen), m.Store.CommitFailures())
}

// TestPostgres_CredentialsCLI: "telehub device add" and "telehub token add"
// work on a PostgreSQL --db, and the hub on that database accepts what
// they made; "config check" never shows the URL's password.
func TestPostgres_CredentialsCLI(t *testing.T) {
	db := pgtest.NewDB(t)
	env := func(string) string { return "" }
	run := func(args ...string) string {
		t.Helper()
		var stdout, stderr strings.Builder
		if code := runCommand(context.Background(), args, env, &stdout, &stderr); code != 0 {
			t.Fatalf("telehub %v: exit %d: %s", args, code, stderr.String())
		}
		return strings.TrimSpace(stdout.String())
	}
	devToken := run("device", "add", "pg-sensor", "--db", db)
	apiToken := run("token", "add", "ops", "--scope", "admin", "--db", db)
	if list := run("token", "list", "--db", db); !strings.Contains(list, "ops") {
		t.Fatalf("token list: %q", list)
	}
	withPassword := strings.Replace(db, "postgres@", "postgres:s3cret@", 1)
	if out := run("config", "check", "--db", withPassword); strings.Contains(out, "s3cret") || !strings.Contains(out, "configuration is valid") {
		t.Fatalf("config check shows the password or fails:\n%s", out)
	}

	m := MustRunMain(t, func(c *Config) { c.DB, c.DeviceAuth = db, true })
	if dev, err := m.Store.AuthenticateDevice(context.Background(), devToken); err != nil || dev != "pg-sensor" {
		t.Fatalf("device token: %q %v", dev, err)
	}
	code, body := request(t, "GET", m.HTTP.URL()+"/api/v1/devices", apiToken, "")
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/devices with the CLI's token: %d %s", code, body)
	}
	if code, _ := request(t, "GET", m.HTTP.URL()+"/api/v1/devices", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("without a token: %d, want 401", code)
	}
}

// pgDB is a fresh PostgreSQL database for one test.
func pgDB(t *testing.T) string { return pgtest.NewDB(t) }

// TestPostgres_TwoHubs: two hubs on one database. A device publishes to
// one; a browser on the other gets history then live with every message
// once, and a browser that resumes on the first hub with since=N gets the
// rest with no gap and no repeat.
func TestPostgres_TwoHubs(t *testing.T) {
	db := pgtest.NewDB(t)
	a := MustRunMain(t, func(c *Config) { c.DB = db })
	b := MustRunMain(t, func(c *Config) { c.DB = db })
	dev := mqttConnect(t, a.Broker.URL(), "shared-1")
	if n := publishN(t, dev, "shared-1", 200); n != 200 {
		t.Fatalf("acked %d of 200", n)
	}
	onB := dialWS(t, b.HTTP.URL(), "since=0")
	first := onB.collect(t, 200, 20*time.Second)
	done := make(chan int, 1)
	go func() { done <- publishN(t, dev, "shared-1", 300) }()
	var more []frame // live, from the other hub's commits
	for timeout := time.After(20 * time.Second); len(more) < 100; {
		select {
		case f := <-onB.frames:
			if f.Type == "message" {
				more = append(more, f)
			}
		case <-timeout:
			t.Fatalf("%d of 100 live messages on hub b", len(more))
		}
	}
	onB.conn.Close()
	last := more[len(more)-1].Seq
	if <-done != 300 {
		t.Fatal("not every publish was acknowledged")
	}
	onA := dialWS(t, a.HTTP.URL(), fmt.Sprintf("since=%d", last))
	rest := onA.collect(t, 500-200-100, 20*time.Second)
	all := append(append(first, more...), rest...)
	for i, f := range all {
		if f.Seq != int64(i+1) {
			t.Fatalf("frame %d has seq %d: a gap or a repeat across the two hubs", i, f.Seq)
		}
	}
	var d struct {
		MessageCount int `json:"message_count"`
	}
	checkFor(t, 10*time.Second, func() error {
		getJSON(t, b.HTTP.URL()+"/api/v1/devices/shared-1", &d)
		if d.MessageCount != 500 {
			return fmt.Errorf("hub b counts %d messages of shared-1, want 500", d.MessageCount)
		}
		return nil
	})
}

// TestPostgres_MigrateFromSQLite: "telehub migrate" copies a hub's SQLite
// database into PostgreSQL without touching the file; the hub then runs on
// PostgreSQL with the same devices, messages, sequence numbers, tokens,
// commands, attributes and retention; a second run copies only what the
// file gained since.
func TestPostgres_MigrateFromSQLite(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "telehub.db")
	ctx := context.Background()
	m := MustRunMain(t, func(c *Config) { c.DB = dbPath })
	postRule(t, m.HTTP.URL(), `{"name":"hot","device":"mig-a","metric":"temp","op":">","value":38}`)
	c := mqttConnect(t, m.Broker.URL(), "mig-pub")
	for _, d := range []string{"mig-a", "mig-b", "mig-c"} {
		if n := publishN(t, c, d, 1000); n != 1000 {
			t.Fatalf("acked %d", n)
		}
	}
	// publishN's temperatures cycle 0.5 .. 39.5: 25 alerts on mig-a, the last open.
	checkFor(t, 10*time.Second, func() error {
		if n := len(listAlerts(t, m.HTTP.URL(), "")); n != 25 {
			return fmt.Errorf("%d alerts", n)
		}
		return nil
	})
	devTok, _ := m.Store.AddDevice(ctx, "mig-a")
	apiTok, _ := m.Store.AddToken(ctx, "ops", devices.ScopeAdmin)
	_, cmd := sendCommand(t, m, apiTok, "mig-offline", `{"method":"wake","timeout":"1h"}`, "")
	request(t, "PUT", m.HTTP.URL()+"/api/v1/devices/mig-b/attributes/shared", apiTok, `{"target":7}`)
	request(t, "PUT", m.HTTP.URL()+"/api/v1/devices/mig-c/retention", apiTok, `{"retention":"365d"}`)
	m.Close(ctx)
	sum := func() string {
		b, err := os.ReadFile(dbPath)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", sha256.Sum256(b))
	}
	before := sum()

	pg := pgtest.NewDB(t)
	migrate := func() string {
		t.Helper()
		var stdout, stderr strings.Builder
		if code := runCommand(ctx, []string{"migrate", "--from", dbPath, "--to", pg, "--chunk", "500"}, func(string) string { return "" }, &stdout, &stderr); code != 0 {
			t.Fatalf("migrate: exit %d\n%s", code, stderr.String())
		}
		return stderr.String()
	}
	out := migrate()
	if !strings.Contains(out, "messages: 3000 of 3000 (100.0%)") {
		t.Fatalf("progress:\n%s", out)
	}
	if sum() != before {
		t.Fatal("migrate changed the SQLite file")
	}

	p := MustRunMain(t, func(c *Config) { c.DB = pg })
	if p.Store.LastSeq() != 3000 {
		t.Fatalf("LastSeq on PostgreSQL %d, want 3000", p.Store.LastSeq())
	}
	for _, d := range []string{"mig-a", "mig-b", "mig-c"} {
		dev, err := p.Store.FindDevice(ctx, d)
		if err != nil || dev.MessageCount != 1000 || string(dev.Latest["n"].Value) != "999" {
			t.Fatalf("%s on PostgreSQL: %+v %v", d, dev, err)
		}
	}
	from, to := devices.AllTime()
	msgs, _ := p.Store.ListMessages(ctx, devices.MessageFilter{Device: "mig-b", From: from, To: to, Limit: 5000})
	if len(msgs) != 1000 || msgs[0].Seq != 1001 || !strings.Contains(string(msgs[999].Payload), `"n":999`) {
		t.Fatalf("mig-b's messages: %d, first seq %d", len(msgs), msgs[0].Seq)
	}
	if dev, err := p.Store.AuthenticateDevice(ctx, devTok); err != nil || dev != "mig-a" {
		t.Fatalf("device token: %q %v", dev, err)
	}
	if tk, err := p.Store.AuthenticateToken(ctx, apiTok); err != nil || tk.Scope != devices.ScopeAdmin {
		t.Fatalf("API token: %+v %v", tk, err)
	}
	if got, err := p.Store.Command(ctx, "mig-offline", cmd.ID); err != nil || got.Method != "wake" || got.Status != devices.CommandQueued {
		t.Fatalf("command: %+v %v", got, err)
	}
	// Still waiting for its device: open (is_open), so it goes out when
	// the device connects to a PostgreSQL hub.
	if pend, err := p.Store.PendingCommands(ctx, "mig-offline", time.Now().UnixMilli()); err != nil || len(pend) != 1 || pend[0].ID != cmd.ID {
		t.Fatalf("pending after the copy: %+v %v", pend, err)
	}
	if a, _ := p.Store.Attributes(ctx, "mig-b"); string(a.Shared["target"].Value) != "7" {
		t.Fatalf("attributes: %+v", a)
	}
	if d, own, _ := p.Store.RetentionOf(ctx, "mig-c"); !own || d != 365*24*time.Hour {
		t.Fatalf("retention: %v %v", d, own)
	}
	if rules, _ := p.Store.Rules(ctx); len(rules) != 1 || rules[0].Name != "hot" {
		t.Fatalf("rules: %+v", rules)
	}
	if list, _ := p.Store.ListAlerts(ctx, devices.AlertFilter{Limit: 100}); len(list) != 25 || list[0].Status != devices.AlertActive || list[1].Status != devices.AlertCleared {
		t.Fatalf("alerts on PostgreSQL: %+v", list)
	}
	if st, _ := p.Store.LoadAlertEngine(ctx); st.Seq < 3000 {
		t.Fatalf("the evaluator's position %d, want the SQLite hub's (3000)", st.Seq)
	}
	// A new command on PostgreSQL gets an id above the copied ones.
	if _, c2 := sendCommand(t, p, apiTok, "mig-offline", `{"method":"again"}`, ""); c2.ID <= cmd.ID {
		t.Fatalf("new command id %d after copied %d", c2.ID, cmd.ID)
	}
	p.Close(ctx)

	// The SQLite hub runs on; a second migration copies only the rest.
	m2 := MustRunMain(t, func(c *Config) { c.DB = dbPath })
	publishN(t, mqttConnect(t, m2.Broker.URL(), "mig-pub2"), "mig-a", 100)
	m2.Close(ctx)
	if out := migrate(); !strings.Contains(out, "messages: 3100 of 3100 (100.0%)") {
		t.Fatalf("second run:\n%s", out)
	}
	p2 := MustRunMain(t, func(c *Config) { c.DB = pg })
	if dev, _ := p2.Store.FindDevice(ctx, "mig-a"); dev == nil || dev.MessageCount != 1100 {
		t.Fatalf("mig-a after the second run: %+v", dev)
	}
	if p2.Store.LastSeq() != 3100 {
		t.Fatalf("LastSeq %d, want 3100", p2.Store.LastSeq())
	}
}

// TestPostgres_CommandThroughAnotherHub: a command made through one hub
// reaches a device connected to another hub's broker, and its answer is
// seen through the first.
func TestPostgres_CommandThroughAnotherHub(t *testing.T) {
	db := pgtest.NewDB(t)
	a := MustRunMain(t, func(c *Config) { c.DB = db })
	b := MustRunMain(t, func(c *Config) { c.DB = db })
	dev := mqttConnect(t, b.Broker.URL(), "far-1")
	answerCommands(t, dev, "far-1")
	var desired inbox
	subscribe(t, dev, "devices/far-1/attributes/desired", desired.handler)
	_, c := sendCommand(t, a, "", "far-1", `{"method":"ping"}`, "?wait=10s")
	if c.Status != "replied" {
		t.Fatalf("command through hub a to a device on hub b: %+v", c)
	}
	request(t, "PATCH", a.HTTP.URL()+"/api/v1/devices/far-1/attributes/shared", "", `{"mode":"eco"}`)
	desired.waitLast(t, `devices/far-1/attributes/desired {"mode":"eco"}`)
}

// TestPostgres_AlertsOnTwoHubs: two hubs on one database raise each alert
// once and send its webhook once (the leading hub evaluates); when that hub
// stops, the other goes on from the saved position and clears it.
func TestPostgres_AlertsOnTwoHubs(t *testing.T) {
	db := pgtest.NewDB(t)
	var a *Main
	hook := newHookServer(t, func() []byte { return []byte(a.webhookSecretValue) })
	a = MustRunMain(t, func(c *Config) { c.DB = db; c.AlertWebhooks = []string{hook.URL} })
	b := MustRunMain(t, func(c *Config) { c.DB = db; c.AlertWebhooks = []string{hook.URL} })
	if a.webhookSecretValue != b.webhookSecretValue {
		t.Fatal("the two hubs sign with different secrets")
	}
	postRule(t, b.HTTP.URL(), `{"name":"hot","metric":"temp","op":">","value":30}`)
	leading := func(m *Main) bool { return m.Store.(interface{ Leading() bool }).Leading() }
	checkFor(t, 10*time.Second, func() error {
		if leading(a) == leading(b) {
			return fmt.Errorf("leading: a %v, b %v", leading(a), leading(b))
		}
		return nil
	})
	leader, other := a, b
	if leading(b) {
		leader, other = b, a
	}
	// The device is on the hub that does not evaluate.
	dev := mqttConnect(t, other.Broker.URL(), "boiler")
	publishN(t, dev, "boiler", 40) // temperatures 0.5 .. 39.5: 10 above 30
	hook.waitEvent(t, 20*time.Second, "hot", "boiler", "active")
	time.Sleep(500 * time.Millisecond) // a second evaluator would have raised its own by now
	// One change, one key: webhooks are at least once, and a receiver
	// drops repeats by key (a repeat with the same key was seen once in CI).
	keys := map[string]bool{}
	for _, c := range hook.list() {
		if c.Event == "active" {
			keys[c.Key] = true
		}
	}
	if len(keys) != 1 {
		t.Fatalf("%d active changes notified, want 1: %+v", len(keys), hook.list())
	}
	leader.Close(context.Background())
	if tok := dev.Publish("devices/boiler/telemetry", 1, false, `{"temp":10}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	hook.waitEvent(t, 30*time.Second, "hot", "boiler", "cleared")
	if list := listAlerts(t, other.HTTP.URL(), ""); len(list) != 1 || list[0].Status != "cleared" || list[0].Count != 10 {
		t.Fatalf("alerts %+v, want one, cleared, with 10 triggers", list)
	}
}
