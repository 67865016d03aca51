package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/devices"
)

// command is a command as the API returns it.
type command struct {
	ID       int64           `json:"id"`
	Device   string          `json:"device"`
	Method   string          `json:"method"`
	Status   string          `json:"status"`
	Response json.RawMessage `json:"response"`
	Error    string          `json:"error"`
	History  []struct {
		Status string `json:"status"`
	} `json:"history"`
}

func (c command) path() string {
	var out []string
	for _, h := range c.History {
		out = append(out, h.Status)
	}
	return strings.Join(out, ">")
}

// sendCommand POSTs a command and returns the API's answer.
func sendCommand(t *testing.T, m *Main, token, device, body, query string) (int, command) {
	t.Helper()
	code, resp := request(t, "POST", m.HTTP.URL()+"/api/v1/devices/"+device+"/commands"+query, token, body)
	var c command
	json.Unmarshal([]byte(resp), &c)
	if code >= 300 {
		t.Logf("POST commands: %d %s", code, resp)
	}
	return code, c
}

func getCommand(t *testing.T, m *Main, device string, id int64) command {
	t.Helper()
	var c command
	getJSON(t, fmt.Sprintf("%s/api/v1/devices/%s/commands/%d", m.HTTP.URL(), device, id), &c)
	return c
}

// answerCommands subscribes c to device's commands (Telehub's topics) and
// answers each with {"echo":params}, or an error for method "fail", and
// "reboot" (one way) not at all; it returns the commands received, as they
// came.
func answerCommands(t *testing.T, c paho.Client, device string) func() []string {
	t.Helper()
	var mu sync.Mutex
	var got []string
	tok := c.Subscribe("devices/"+device+"/commands/+", 1, func(c paho.Client, msg paho.Message) {
		var req struct {
			ID     int64           `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		json.Unmarshal(msg.Payload(), &req)
		mu.Lock()
		got = append(got, req.Method)
		mu.Unlock()
		answer := fmt.Sprintf(`{"echo":%s}`, req.Params)
		switch req.Method {
		case "fail":
			answer = `{"error":"cannot do that"}`
		case "reboot":
			return
		}
		c.Publish(msg.Topic()+"/response", 1, false, answer)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// backends are the stores a test runs on: each gives the option that
// points a hub at a fresh database of its kind.
var backends = []struct {
	name string
	db   func(t *testing.T) func(*Config)
}{
	{"SQLite", func(*testing.T) func(*Config) { return func(*Config) {} }},
	{"PostgreSQL", func(t *testing.T) func(*Config) { db := pgDB(t); return func(c *Config) { c.DB = db } }},
}

// TestDownlink_RoundTrip: a device that listens gets a command at once; its
// PUBACK makes it delivered and its answer replied, in the API, on the
// POST that waits for it and on the WebSocket.
func TestDownlink_RoundTrip(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			m := MustRunMain(t, backend.db(t))
			ws := dialWS(t, m.HTTP.URL(), "since=0")
			dev := mqttConnect(t, m.Broker.URL(), "thermostat-1")
			received := answerCommands(t, dev, "thermostat-1")

			code, c := sendCommand(t, m, "", "thermostat-1", `{"method":"setInterval","params":{"seconds":5},"timeout":"30s"}`, "?wait=10s")
			if code != http.StatusCreated || c.Status != "replied" || string(c.Response) != `{"echo":{"seconds":5}}` {
				t.Fatalf("POST ?wait: %d %+v", code, c)
			}
			if c.path() != "queued>sent>delivered>replied" && c.path() != "queued>sent>replied>delivered" {
				// The answer may overtake the PUBACK's record; both mean
				// the device had it. Never delivered before sent.
				if !strings.HasPrefix(c.path(), "queued>sent>") {
					t.Fatalf("history %s", c.path())
				}
			}
			if got := received(); len(got) != 1 || got[0] != "setInterval" {
				t.Fatalf("device received %v, want one setInterval", got)
			}
			// An error answer fails the command.
			_, f := sendCommand(t, m, "", "thermostat-1", `{"method":"fail"}`, "?wait=10s")
			if f.Status != "failed" || f.Error != "cannot do that" {
				t.Fatalf("error answer: %+v", f)
			}
			// One way: done at the device's PUBACK.
			_, o := sendCommand(t, m, "", "thermostat-1", `{"method":"reboot","oneway":true}`, "?wait=10s")
			if o.Status != "delivered" {
				t.Fatalf("one-way: %+v, want delivered", o)
			}
			// The WebSocket saw the command reach replied.
			deadline := time.After(10 * time.Second)
			for seen := false; !seen; {
				select {
				case fr := <-ws.frames:
					var wc command
					if fr.Type == "command" && json.Unmarshal(fr.Command, &wc) == nil && wc.ID == c.ID && wc.Status == "replied" {
						seen = true
					}
				case <-deadline:
					t.Fatal("no command frame with status replied on the WebSocket")
				}
			}
			var list struct {
				Commands []command `json:"commands"`
			}
			getJSON(t, m.HTTP.URL()+"/api/v1/devices/thermostat-1/commands?limit=10", &list)
			if len(list.Commands) != 3 || list.Commands[0].ID != o.ID || list.Commands[2].ID != c.ID {
				t.Fatalf("list: %+v", list.Commands)
			}
			_, metrics := request(t, "GET", m.HTTP.URL()+"/metrics", "", "")
			for _, want := range []string{`telehub_commands_total{status="replied"} 1`, `telehub_commands_total{status="failed"} 1`,
				`telehub_commands_open{status="queued"} 0`, "telehub_command_round_trip_seconds_count 2"} {
				if !strings.Contains(metrics, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
}

// TestDownlink_OfflineAndRestart: commands for a device that is offline
// wait, in order, also across a hub restart, and go out when it
// subscribes; an expired command never does.
func TestDownlink_OfflineAndRestart(t *testing.T) {
	dbPath := t.TempDir() + "/telehub.db"
	m := MustRunMain(t, func(c *Config) { c.DB = dbPath })
	_, first := sendCommand(t, m, "", "sleepy", `{"method":"first","timeout":"1m"}`, "")
	_, short := sendCommand(t, m, "", "sleepy", `{"method":"short","timeout":"1s"}`, "")
	_, second := sendCommand(t, m, "", "sleepy", `{"method":"second","timeout":"1m"}`, "")
	if first.Status != "queued" || second.Status != "queued" {
		t.Fatalf("offline device: %s, %s; want queued", first.Status, second.Status)
	}
	checkFor(t, 10*time.Second, func() error {
		if c := getCommand(t, m, "sleepy", short.ID); c.Status != "expired" {
			return fmt.Errorf("short command is %s", c.Status)
		}
		return nil
	})
	m.Close(context.Background())

	m2 := MustRunMain(t, func(c *Config) { c.DB = dbPath })
	dev := mqttConnect(t, m2.Broker.URL(), "sleepy")
	received := answerCommands(t, dev, "sleepy")
	checkFor(t, 10*time.Second, func() error {
		if c := getCommand(t, m2, "sleepy", second.ID); c.Status != "replied" {
			return fmt.Errorf("second is %s", c.Status)
		}
		return nil
	})
	if got := received(); fmt.Sprint(got) != "[first second]" {
		t.Fatalf("device received %v, want [first second]: in order, never the expired one", got)
	}
	if c := getCommand(t, m2, "sleepy", first.ID); c.Status != "replied" || !strings.HasPrefix(c.path(), "queued>sent>") {
		t.Fatalf("first: %+v", c)
	}
	// Cancel: once, then 409.
	_, later := sendCommand(t, m2, "", "nobody", `{"method":"x"}`, "")
	if code, _ := request(t, "DELETE", fmt.Sprintf("%s/api/v1/devices/nobody/commands/%d", m2.HTTP.URL(), later.ID), "", ""); code != http.StatusOK {
		t.Fatalf("cancel: %d", code)
	}
	if code, _ := request(t, "DELETE", fmt.Sprintf("%s/api/v1/devices/nobody/commands/%d", m2.HTTP.URL(), later.ID), "", ""); code != http.StatusConflict {
		t.Fatalf("second cancel: %d, want 409", code)
	}
}

// TestDownlink_SentOnce: commands created while the device acknowledges
// earlier ones each reach it once: a send that reads a command as still
// sent after the device's PUBACK, before its change to delivered is
// committed, does not publish it again.
func TestDownlink_SentOnce(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			m := MustRunMain(t, backend.db(t), func(c *Config) { c.MaxPendingCommands = 1000 })
			dev := mqttConnect(t, m.Broker.URL(), "valve-1")
			var mu sync.Mutex
			got := map[int64]int{}
			// The device acknowledges and does not answer: each command
			// stays delivered, and every later send reads the ones whose
			// delivered is not committed yet.
			subscribe(t, dev, "devices/valve-1/commands/+", func(_ paho.Client, msg paho.Message) {
				var req struct{ ID int64 }
				json.Unmarshal(msg.Payload(), &req)
				mu.Lock()
				got[req.ID]++
				mu.Unlock()
			})
			const workers, each = 4, 40
			ids := make(chan int64, workers*each)
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						c, err := m.Downlink.Create(context.Background(), "valve-1", devices.CommandRequest{Method: "close", Timeout: time.Minute})
						if err != nil {
							t.Errorf("create: %v", err)
							return
						}
						ids <- c.ID
					}
				}()
			}
			wg.Wait()
			close(ids)
			checkFor(t, 20*time.Second, func() error {
				var list struct {
					Commands []command `json:"commands"`
				}
				getJSON(t, m.HTTP.URL()+"/api/v1/devices/valve-1/commands?status=delivered&limit=500", &list)
				if len(list.Commands) != workers*each {
					return fmt.Errorf("%d of %d delivered", len(list.Commands), workers*each)
				}
				return nil
			})
			time.Sleep(100 * time.Millisecond) // a second copy would be on its way
			mu.Lock()
			defer mu.Unlock()
			for id := range ids {
				if got[id] != 1 {
					t.Errorf("command %d reached the device %d times, want once", id, got[id])
				}
			}
		})
	}
}

// TestDownlink_ThingsBoardAndACL: a device with a token, ThingsBoard's
// firmware shape (token as username, v1/devices/me/rpc/request/+, answer on
// .../response/{n}), gets its commands and answers them; it cannot listen
// to or answer another device's commands.
func TestDownlink_ThingsBoardAndACL(t *testing.T) {
	m := MustRunMain(t, func(c *Config) { c.DeviceAuth = true })
	ctx := context.Background()
	tokA, _ := m.Store.AddDevice(ctx, "tb-a")
	tokB, _ := m.Store.AddDevice(ctx, "tb-b")
	connect := func(id, token string) paho.Client { return tokenClient(t, m.Broker.URL(), id, token) }
	a := connect("a", tokA)
	var mu sync.Mutex
	var requests []string
	a.Subscribe("v1/devices/me/rpc/request/+", 1, func(c paho.Client, msg paho.Message) {
		mu.Lock()
		requests = append(requests, msg.Topic()+" "+string(msg.Payload()))
		mu.Unlock()
		if strings.Contains(string(msg.Payload()), `"slow"`) {
			return // left unanswered
		}
		n := strings.TrimPrefix(msg.Topic(), "v1/devices/me/rpc/request/")
		c.Publish("v1/devices/me/rpc/response/"+n, 1, false, `{"done":true}`)
	}).WaitTimeout(10 * time.Second)

	api, _ := m.Store.AddToken(ctx, "ops", devices.ScopeAdmin)
	_, c := sendCommand(t, m, api, "tb-a", `{"method":"getState","params":{"x":1}}`, "?wait=10s")
	if c.Status != "replied" || string(c.Response) != `{"done":true}` {
		t.Fatalf("ThingsBoard round trip: %+v", c)
	}
	mu.Lock()
	want := fmt.Sprintf(`v1/devices/me/rpc/request/%d {"method":"getState","params":{"x":1}}`, c.ID)
	if len(requests) != 1 || requests[0] != want {
		t.Fatalf("device got %v, want [%s]", requests, want)
	}
	mu.Unlock()
	b0 := connect("b0", tokB)
	var bGot []string
	b0.Subscribe("v1/devices/me/rpc/request/+", 1, func(_ paho.Client, msg paho.Message) {
		mu.Lock()
		bGot = append(bGot, msg.Topic())
		mu.Unlock()
	}).WaitTimeout(10 * time.Second)

	// b cannot listen to a's commands...
	b := connect("b", tokB)
	tok := b.Subscribe("devices/tb-a/commands/+", 1, nil)
	tok.WaitTimeout(10 * time.Second)
	if st, ok := tok.(*paho.SubscribeToken); !ok || st.Result()["devices/tb-a/commands/+"] != 0x80 {
		t.Fatalf("subscribe to another device's commands: %v", tok.(*paho.SubscribeToken).Result())
	}
	// ...nor answer them through its own topics.
	_, pending := sendCommand(t, m, api, "tb-a", `{"method":"slow","timeout":"1m"}`, "")
	b.Publish(fmt.Sprintf("devices/tb-b/commands/%d/response", pending.ID), 1, false, `{"forged":true}`).WaitTimeout(10 * time.Second)
	time.Sleep(200 * time.Millisecond)
	if got := getCommandAuth(t, m, api, "tb-a", pending.ID); got.Status != "delivered" || len(got.Response) != 0 {
		t.Fatalf("after b's forged answer, a's command is %+v; want delivered, unanswered", got)
	}
	// b, listening on the same "me" topic, never saw a's commands.
	mu.Lock()
	if len(bGot) != 0 {
		t.Fatalf("device b received a's commands: %v", bGot)
	}
	mu.Unlock()
	// Sending needs an admin token.
	if code, _ := sendCommand(t, m, "", "tb-a", `{"method":"x"}`, ""); code != http.StatusUnauthorized {
		t.Fatalf("POST without a token: %d, want 401", code)
	}
}

func getCommandAuth(t *testing.T, m *Main, token, device string, id int64) command {
	t.Helper()
	var c command
	getJSONAuth(t, fmt.Sprintf("%s/api/v1/devices/%s/commands/%d", m.HTTP.URL(), device, id), token, &c)
	return c
}

// inbox collects what a paho client receives on a filter.
type inbox struct {
	mu  sync.Mutex
	got []string
}

func (b *inbox) handler(_ paho.Client, msg paho.Message) {
	b.mu.Lock()
	b.got = append(b.got, msg.Topic()+" "+string(msg.Payload()))
	b.mu.Unlock()
}

// wait returns the messages once there are n, or fails t.
func (b *inbox) wait(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	checkFor(t, 10*time.Second, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		out = append([]string(nil), b.got...)
		if len(out) < n {
			return fmt.Errorf("%d of %d messages: %v", len(out), n, out)
		}
		return nil
	})
	return out
}

// waitLast waits until the latest message is want; before it, only
// messages no later than it (repeats of an earlier state) may have come.
func (b *inbox) waitLast(t *testing.T, want string) {
	t.Helper()
	checkFor(t, 10*time.Second, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.got) == 0 || b.got[len(b.got)-1] != want {
			return fmt.Errorf("messages %v, want the latest to be %s", b.got, want)
		}
		return nil
	})
}

func subscribe(t *testing.T, c paho.Client, filter string, h paho.MessageHandler) {
	t.Helper()
	tok := c.Subscribe(filter, 1, h)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	if code := tok.(*paho.SubscribeToken).Result()[filter]; code >= 0x80 {
		t.Fatalf("subscribe %s: refused (%#x)", filter, code)
	}
}

// TestAttributes_SharedAndReported: shared attributes set while a device
// is offline reach it when it subscribes, changes reach it live and again
// after a reconnect; what it reports is stored as client attributes.
func TestAttributes_SharedAndReported(t *testing.T) {
	m := MustRunMain(t)
	ws := dialWS(t, m.HTTP.URL(), "device=twin-1")
	url := m.HTTP.URL() + "/api/v1/devices/twin-1/attributes"
	if code, body := request(t, "PUT", url+"/shared", "", `{"target":21}`); code != http.StatusOK {
		t.Fatalf("PUT shared: %d %s", code, body)
	}
	dev := mqttConnect(t, m.Broker.URL(), "twin-1")
	var box inbox
	subscribe(t, dev, "devices/twin-1/attributes/desired", box.handler)
	// The full desired state each time; the PUT's own push may come after
	// the one for the subscription, a repeat of the same state.
	box.waitLast(t, `devices/twin-1/attributes/desired {"target":21}`)
	request(t, "PATCH", url+"/shared", "", `{"mode":"eco"}`)
	box.waitLast(t, `devices/twin-1/attributes/desired {"mode":"eco","target":21}`)
	dev.Publish("devices/twin-1/attributes", 1, false, `{"fw":"1.0.3","uptime":12}`).WaitTimeout(10 * time.Second)
	var a struct {
		Shared map[string]struct {
			Value json.RawMessage `json:"value"`
			TS    int64           `json:"ts"`
		} `json:"shared"`
		Client map[string]struct {
			Value json.RawMessage `json:"value"`
		} `json:"client"`
	}
	checkFor(t, 10*time.Second, func() error {
		getJSON(t, url, &a)
		if string(a.Client["fw"].Value) != `"1.0.3"` || string(a.Shared["mode"].Value) != `"eco"` || a.Shared["target"].TS == 0 {
			return fmt.Errorf("attributes %+v", a)
		}
		return nil
	})
	// Offline: a change waits for the next subscription.
	dev.Disconnect(0)
	request(t, "PATCH", url+"/shared", "", `{"target":22,"mode":null}`)
	dev2 := mqttConnect(t, m.Broker.URL(), "twin-1")
	var box2 inbox
	subscribe(t, dev2, "devices/twin-1/attributes/desired", box2.handler)
	box2.waitLast(t, `devices/twin-1/attributes/desired {"target":22}`)
	if code, _ := request(t, "PATCH", url+"/shared", "", `[1,2]`); code != http.StatusBadRequest {
		t.Fatalf("PATCH with an array: %d, want 400", code)
	}
	// Each change is an event, in the API and on the WebSocket.
	var hist struct {
		Events []struct {
			Scope   string                     `json:"scope"`
			Changed map[string]json.RawMessage `json:"changed"`
		} `json:"events"`
	}
	getJSON(t, url+"/history?limit=10", &hist)
	if len(hist.Events) != 4 || hist.Events[0].Scope != "shared" || string(hist.Events[0].Changed["mode"]) != "null" || hist.Events[1].Scope != "client" {
		t.Fatalf("history: %+v", hist.Events)
	}
	seen := map[string]bool{}
	for timeout := time.After(10 * time.Second); len(seen) < 2; {
		select {
		case f := <-ws.frames:
			var e struct {
				Scope string `json:"scope"`
			}
			if f.Type == "attributes" && json.Unmarshal(f.Event, &e) == nil {
				seen[e.Scope] = true
			}
		case <-timeout:
			t.Fatalf("attribute frames seen for %v, want shared and client", seen)
		}
	}
}

// TestAttributes_ThingsBoard: ThingsBoard's attribute topics: shared
// changes on v1/devices/me/attributes (to that device only), client
// attributes published there, and request/response.
func TestAttributes_ThingsBoard(t *testing.T) {
	m := MustRunMain(t, func(c *Config) { c.DeviceAuth = true })
	ctx := context.Background()
	tokA, _ := m.Store.AddDevice(ctx, "tb-a")
	tokB, _ := m.Store.AddDevice(ctx, "tb-b")
	api, _ := m.Store.AddToken(ctx, "ops", devices.ScopeAdmin)
	connect := func(id, token string) paho.Client { return tokenClient(t, m.Broker.URL(), id, token) }
	a, b := connect("a", tokA), connect("b", tokB)
	var boxA, boxB, respA inbox
	subscribe(t, a, "v1/devices/me/attributes", boxA.handler)
	subscribe(t, a, "v1/devices/me/attributes/response/+", respA.handler)
	subscribe(t, b, "v1/devices/me/attributes", boxB.handler)
	boxA.wait(t, 1) // all shared attributes on subscribe: none yet, {}
	request(t, "PATCH", m.HTTP.URL()+"/api/v1/devices/tb-a/attributes/shared", api, `{"led":true,"rate":5}`)
	request(t, "PATCH", m.HTTP.URL()+"/api/v1/devices/tb-a/attributes/shared", api, `{"rate":10}`)
	if got := boxA.wait(t, 3); got[0] != `v1/devices/me/attributes {}` || got[1] != `v1/devices/me/attributes {"led":true,"rate":5}` || got[2] != `v1/devices/me/attributes {"rate":10}` {
		t.Fatalf("device a got %v; want {}, then each change", got)
	}
	a.Publish("v1/devices/me/attributes", 1, false, `{"fw":"2.1"}`).WaitTimeout(10 * time.Second)
	a.Publish("v1/devices/me/attributes/request/7", 1, false, `{"clientKeys":"fw","sharedKeys":"led"}`).WaitTimeout(10 * time.Second)
	if got := respA.wait(t, 1); got[0] != `v1/devices/me/attributes/response/7 {"client":{"fw":"2.1"},"shared":{"led":true}}` {
		t.Fatalf("attribute response: %v", got)
	}
	time.Sleep(200 * time.Millisecond)
	boxB.mu.Lock()
	if len(boxB.got) != 1 || boxB.got[0] != `v1/devices/me/attributes {}` {
		t.Fatalf("device b saw %v: another device's attributes", boxB.got)
	}
	boxB.mu.Unlock()
	tok := b.Subscribe("devices/tb-a/attributes/desired", 1, nil)
	tok.WaitTimeout(10 * time.Second)
	if r := tok.(*paho.SubscribeToken).Result()["devices/tb-a/attributes/desired"]; r != 0x80 {
		t.Fatalf("b subscribing to a's attributes: granted %#x", r)
	}
}

// TestAttributes_SubscribeWhileSending: a device subscribing to
// ThingsBoard's shared attribute topic is granted it while the hub is
// sending on that same topic to another device (the delivery check that
// keeps one device's attributes from another must not refuse the
// subscription).
func TestAttributes_SubscribeWhileSending(t *testing.T) {
	m := MustRunMain(t, func(c *Config) { c.DeviceAuth = true })
	ctx := context.Background()
	tokA, _ := m.Store.AddDevice(ctx, "tb-a")
	tokB, _ := m.Store.AddDevice(ctx, "tb-b")
	connect := func(id, token string) paho.Client { return tokenClient(t, m.Broker.URL(), id, token) }
	a, b := connect("a", tokA), connect("b", tokB)
	var boxA inbox
	subscribe(t, a, devices.TBAttributes, boxA.handler)
	stop, sent := make(chan struct{}), make(chan int, 1)
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }) }
	defer halt()
	go func() {
		n := 0
		defer func() { sent <- n }()
		for ; n < 5000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := m.Downlink.SetShared(ctx, "tb-a", map[string]json.RawMessage{"n": json.RawMessage(strconv.Itoa(n))}, false); err != nil {
				t.Errorf("set shared: %v", err)
				return
			}
		}
	}()
	for i := 0; i < 200; i++ {
		subscribe(t, b, devices.TBAttributes, nil)
		if tok := b.Unsubscribe(devices.TBAttributes); !tok.WaitTimeout(10 * time.Second) {
			t.Fatal("unsubscribe timed out")
		}
	}
	halt()
	if n := <-sent; n == 0 {
		t.Fatal("no attribute change was sent while b subscribed")
	}
}

// TestDownlink_QueuedBehindInFlight: a command created while an earlier
// one is in flight on the device's connection (sent, its PUBACK not back
// yet) goes out at once, not at the next sweep.
func TestDownlink_QueuedBehindInFlight(t *testing.T) {
	m := MustRunMain(t)
	dev := mqttConnect(t, m.Broker.URL(), "pump-1")
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	got := make(chan string, 4)
	// paho acknowledges a message when its handler returns: holding the
	// first holds its PUBACK.
	subscribe(t, dev, "devices/pump-1/commands/+", func(_ paho.Client, msg paho.Message) {
		var req struct{ Method string }
		json.Unmarshal(msg.Payload(), &req)
		got <- req.Method
		if req.Method == "slow" {
			<-release
		}
	})
	_, slow := sendCommand(t, m, "", "pump-1", `{"method":"slow","timeout":"30s"}`, "")
	if method := <-got; method != "slow" {
		t.Fatalf("device got %q first", method)
	}
	start := time.Now()
	_, next := sendCommand(t, m, "", "pump-1", `{"method":"next","timeout":"30s"}`, "")
	checkFor(t, 10*time.Second, func() error {
		if c := getCommand(t, m, "pump-1", next.ID); c.Status != "sent" {
			return fmt.Errorf("next is %s", c.Status)
		}
		return nil
	})
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("next was sent after %v, behind %d in flight", el, slow.ID)
	}
	once.Do(func() { close(release) })
	select {
	case method := <-got:
		if method != "next" {
			t.Fatalf("device got %q, want next", method)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the device never got the second command")
	}
}

// tokenClient connects a device that authenticates with its token as
// username (ThingsBoard's firmware shape).
func tokenClient(t *testing.T, url, id, token string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(token).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}
