package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// CommandReport is what the command loop measured (Config.CommandRate).
type CommandReport struct {
	// Sent counts commands created through the hub's API; Answered those
	// that came back replied; Lost those that did not (expired, failed,
	// refused or no answer in time).
	Sent     int64 `json:"sent"`
	Answered int64 `json:"answered"`
	Lost     int64 `json:"lost"`
	// RoundTrip is from the POST to the hub to its answer with the
	// device's reply.
	RoundTrip Percentiles `json:"round_trip_ms"`
}

// listen subscribes a device to its commands and shared attributes (at
// each connect): it answers ping, setInterval (changing its publish rate)
// and, with an error, anything else; a shared attribute "interval"
// (seconds) sets its rate too.
func (d *device) listen(c paho.Client) {
	c.Subscribe("devices/"+d.id+"/commands/+", 1, d.onCommand)
	c.Subscribe("devices/"+d.id+"/attributes/desired", 1, d.onDesired)
}

func (d *device) onCommand(c paho.Client, msg paho.Message) {
	var req struct {
		Method string `json:"method"`
		Params struct {
			Seconds float64 `json:"seconds"`
		} `json:"params"`
	}
	var answer any
	switch err := json.Unmarshal(msg.Payload(), &req); {
	case err != nil:
		answer = map[string]string{"error": "not JSON"}
	case req.Method == "ping":
		answer = map[string]bool{"pong": true}
	case req.Method == "setInterval" && req.Params.Seconds > 0:
		d.setInterval(req.Params.Seconds)
		answer = map[string]float64{"interval_s": req.Params.Seconds}
	default:
		answer = map[string]string{"error": "unknown method: " + req.Method}
	}
	b, _ := json.Marshal(answer)
	c.Publish(msg.Topic()+"/response", 1, false, b) // paho's handler must not wait on the token
}

func (d *device) onDesired(_ paho.Client, msg paho.Message) {
	var want struct {
		Interval float64 `json:"interval"`
	}
	if json.Unmarshal(msg.Payload(), &want) == nil && want.Interval > 0 {
		d.setInterval(want.Interval)
		d.fleet.stats.applied.Add(1)
	}
}

// setInterval makes the device publish every s seconds.
func (d *device) setInterval(s float64) {
	d.rate.Store(math.Float64bits(1 / min(max(s, 0.001), 86400)))
}

// interval is the time between the device's messages now.
func (d *device) interval() time.Duration {
	rate := d.fleet.cfg.Rate
	if bits := d.rate.Load(); bits != 0 {
		rate = math.Float64frombits(bits)
	}
	return time.Duration(float64(time.Second) / rate)
}

// commandLoop sends cfg.CommandRate ping commands a second through the
// hub's API, each to a random connected device, and waits for each one's
// answer (POST ?wait), until ctx ends; then it waits for those in flight.
func (f *fleet) commandLoop(ctx context.Context, r *CommandReport) (wait func()) {
	c := &commander{
		fleet: f,
		lat:   newRecorder(),
		sem:   make(chan struct{}, maxCommandsInFlight),
		// As many kept-alive connections as commands in flight: the
		// default two would open and close a connection per command.
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: maxCommandsInFlight, MaxIdleConns: maxCommandsInFlight}},
		rng:    rand.New(rand.NewPCG(uint64(f.cfg.Seed), 99)),
	}
	// A ticker drops the ticks its reader misses (at 1,000 a second, many
	// on a busy machine): each tick sends what is due by the clock, so the
	// offered rate is the one asked for.
	tick := time.NewTicker(max(time.Millisecond, time.Duration(float64(time.Second)/f.cfg.CommandRate)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer tick.Stop()
		start, issued := time.Now(), int64(0)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for due := int64(time.Since(start).Seconds() * f.cfg.CommandRate); issued < due; issued++ {
				c.send(ctx)
			}
		}
	}()
	return func() {
		<-done
		c.wg.Wait()
		r.Sent, r.Answered, r.Lost, r.RoundTrip = c.sent.Load(), c.answered.Load(), c.lost.Load(), c.lat.percentiles()
	}
}

// commander sends the command loop's pings and counts their outcomes.
type commander struct {
	fleet                *fleet
	client               *http.Client
	rng                  *rand.Rand // the loop's goroutine only
	sem                  chan struct{}
	wg                   sync.WaitGroup
	sent, answered, lost atomic.Int64
	lat                  *recorder
}

// send sends a ping to a random connected device and waits for its answer
// in a goroutine of its own; with as many in flight as sem holds it counts
// one lost instead (the hub is not keeping up).
func (c *commander) send(ctx context.Context) {
	d := c.fleet.devices[c.rng.IntN(len(c.fleet.devices))]
	if !d.connected.Load() {
		return
	}
	c.sent.Add(1)
	select {
	case c.sem <- struct{}{}:
	default:
		c.lost.Add(1)
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() { <-c.sem }()
		start := time.Now()
		if sendPing(context.WithoutCancel(ctx), c.client, c.fleet.cfg, d.id) {
			c.answered.Add(1)
			c.lat.add(time.Since(start))
		} else {
			c.lost.Add(1)
		}
	}()
}

// maxCommandsInFlight bounds the commands the loop waits on at once.
const maxCommandsInFlight = 512

// sendPing sends one ping to device and reports whether it was answered.
func sendPing(ctx context.Context, client *http.Client, cfg *Config, device string) bool {
	url := fmt.Sprintf("%s/api/v1/devices/%s/commands?wait=10s", cfg.HubURL, device)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte(`{"method":"ping","timeout":"10s"}`)))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.HubToken != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.HubToken)
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var c struct {
		Status string `json:"status"`
	}
	return resp.StatusCode == http.StatusCreated && json.NewDecoder(resp.Body).Decode(&c) == nil && c.Status == "replied"
}
