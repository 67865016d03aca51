package simulator

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/devices"
)

// device is one virtual device: its own MQTT connection, profile, random
// source and sequence number, which survives reconnects.
type device struct {
	id      string
	fleet   *fleet
	client  paho.Client
	profile Profile
	tmpl    *Template
	rng     *rand.Rand
	seq     uint64 // last sequence number used

	mu     sync.Mutex
	sentAt []int64 // send time (Unix ns) of seq i+1, for the verifier
	acked  []bool  // whether seq i+1 was acknowledged

	connected     atomic.Bool
	everConnected atomic.Bool   // connected at least once during the run
	rate          atomic.Uint64 // messages per second as float64 bits, once a command or attribute set it
}

func (d *device) options(cfg *Config, username string) *paho.ClientOptions {
	scheme := cfg.Scheme
	o := paho.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(d.id).
		SetCleanSession(cfg.Clean).
		SetStore(newCopyStore()).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10*time.Second).
		SetKeepAlive(30*time.Second).
		SetWriteTimeout(10*time.Second).
		SetWill(scheme.Topic(d.id, devices.KindStatus), "offline", 1, true).
		SetOnConnectHandler(func(c paho.Client) {
			d.connected.Store(true)
			d.everConnected.Store(true)
			d.fleet.stats.connects.Add(1)
			// Retained, so a dashboard that connects later sees it at once.
			c.Publish(scheme.Topic(d.id, devices.KindStatus), 1, true, "online")
			if cfg.Commands {
				d.listen(c)
			}
		}).
		SetConnectionLostHandler(func(paho.Client, error) {
			d.connected.Store(false)
			d.fleet.stats.disconnects.Add(1)
		})
	if username != "" {
		o.SetUsername(username)
	}
	if cfg.Password != "" {
		o.SetPassword(cfg.Password)
	}
	if d.fleet.tls != nil {
		o.SetTLSConfig(d.fleet.tls)
	}
	return o
}

// payload builds the next message: the profile's metrics plus "seq" (the
// device's sequence number) and "ts" (send time, Unix ms).
func (d *device) payload(seq uint64, now time.Time) []byte {
	if d.tmpl != nil {
		return d.tmpl.Render(nil, d.id, seq, now, d.rng)
	}
	v := d.profile.Values(now)
	v["seq"] = seq
	v["ts"] = now.UnixMilli()
	b, _ := json.Marshal(v)
	return b
}

func (d *device) recordSent(seq uint64, at time.Time) {
	d.mu.Lock()
	for uint64(len(d.sentAt)) < seq {
		d.sentAt = append(d.sentAt, 0)
		d.acked = append(d.acked, false)
	}
	d.sentAt[seq-1] = at.UnixNano()
	d.mu.Unlock()
}

func (d *device) markAcked(seq uint64) {
	d.mu.Lock()
	d.acked[seq-1] = true
	d.mu.Unlock()
}

func (d *device) isAcked(seq uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return seq > 0 && seq <= uint64(len(d.acked)) && d.acked[seq-1]
}

// sentTime returns when seq was sent, or false when it was not.
func (d *device) sentTime(seq uint64) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if seq == 0 || seq > uint64(len(d.sentAt)) || d.sentAt[seq-1] == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, d.sentAt[seq-1]), true
}

// run publishes until ctx ends or Count messages were sent, then waits
// (up to drain) for the outstanding acknowledgements.
func (d *device) run(ctx context.Context, drain time.Duration) {
	cfg := d.fleet.cfg
	topic := cfg.Scheme.Topic(d.id, devices.KindTelemetry)
	type inflight struct {
		tok paho.Token
		seq uint64
		at  time.Time
	}
	window := make(chan inflight, max(1, cfg.InFlight)-1) // the one being published counts too
	acksDone := make(chan struct{})
	go func() {
		defer close(acksDone)
		deadline := time.Time{}
		for f := range window {
			wait := 60 * time.Second
			if !deadline.IsZero() {
				wait = time.Until(deadline)
			}
			select {
			case <-f.tok.Done():
			case <-time.After(max(wait, 0)):
				d.fleet.stats.errors.Add(1) // no PUBACK in time
				continue
			}
			if f.tok.Error() != nil {
				d.fleet.stats.errors.Add(1)
				continue
			}
			d.fleet.stats.acked.Add(1)
			d.markAcked(f.seq)
			d.fleet.ackLat.add(time.Since(f.at))
			if deadline.IsZero() && ctx.Err() != nil {
				deadline = time.Now().Add(drain)
			}
		}
	}()

	interval := d.interval()
	next := time.Now().Add(time.Duration(d.rng.Float64() * float64(interval))) // spread devices over one interval
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
loop:
	for cfg.Count == 0 || d.seq < uint64(cfg.Count) {
		select {
		case <-ctx.Done():
			break loop
		case <-timer.C:
		}
		interval = d.interval() // a command or an attribute may change it
		jitter := 1 + cfg.Jitter*(2*d.rng.Float64()-1)
		next = next.Add(time.Duration(float64(interval) * jitter))
		if lag := time.Since(next); lag > 10*interval {
			next = time.Now() // fell far behind: do not burst to catch up
		}
		timer.Reset(time.Until(next))
		if !d.client.IsConnectionOpen() {
			d.fleet.stats.skipped.Add(1) // a real device would buffer or drop; this one drops and counts
			continue
		}
		d.seq++
		now := time.Now()
		d.recordSent(d.seq, now)
		tok := d.client.Publish(topic, cfg.QoS, cfg.Retain, d.payload(d.seq, now))
		d.fleet.stats.sent.Add(1)
		if cfg.QoS == 0 {
			continue
		}
		select {
		case window <- inflight{tok, d.seq, now}:
		case <-ctx.Done():
			window <- inflight{tok, d.seq, now} // room frees as acks arrive or time out
		}
	}
	close(window)
	<-acksDone
}
