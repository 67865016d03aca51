package devices

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"
)

// Activity is what Presence needs to know of a device.
type Activity struct {
	ID       string
	LastSeen int64  // Unix ms
	Status   string // "online", "offline", ... or "" (see Device.Status)
	StatusAt int64
}

// StatusEvent is a change of a device's status that the hub observed (as
// opposed to a status message the device sent).
type StatusEvent struct {
	Device string `json:"device"`
	Status string `json:"status"` // "online" or "offline"
	Reason string `json:"reason"` // connected, disconnected, connection lost, inactive, active
	At     int64  `json:"at"`     // Unix ms
}

// FeedMessage returns ev as the Feed carries it to WebSocket clients: a
// status message with no sequence number (it is not one of the device's
// messages), topic "$telehub/status/{device}" and payload
// {"status":..,"reason":..}.
func (ev StatusEvent) FeedMessage() Message {
	payload, _ := json.Marshal(struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}{ev.Status, ev.Reason})
	return Message{Device: ev.Device, Topic: "$telehub/status/" + ev.Device, Kind: KindStatus, TS: ev.At, Received: ev.At, Payload: payload}
}

// StatusRecorder stores status events; every devices.Store implements it.
type StatusRecorder interface {
	SetStatus(ctx context.Context, ev StatusEvent) error
}

// Presence keeps devices' online/offline status from what the hub sees,
// besides what devices say themselves (their status topic and last will):
//
//   - the embedded broker reports connections and disconnections (Online,
//     Offline);
//   - with Timeout set, a device silent for that long turns offline
//     ("inactive"), and back online when it publishes again.
//
// Each change is recorded as a StatusEvent: it sets the device's status and
// is kept in the device's event log (not among its messages, which are what
// the device sent). Build it, then Run it in a goroutine until its context
// ends.
type Presence struct {
	// Recorder stores the events. Required.
	Recorder StatusRecorder
	// Devices lists the devices' activity, for the inactivity sweep. Required with Timeout.
	Devices func() []Activity
	// Lookup returns one device's activity (ok false for an unknown
	// device). Required.
	Lookup func(id string) (Activity, bool)
	// Timeout turns a silent device offline; 0 disables the sweep.
	Timeout time.Duration
	// Connected, when set, tells whether a device has a live connection to
	// the embedded broker: such a device is online however quiet it is.
	Connected func(id string) bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	once      sync.Once
	restarted []string // set before Run
	events    chan presenceEvent
	mu        sync.Mutex
	emitted   map[string]string // last status this Presence stored, by device
}

type presenceEvent struct {
	device, status, reason string
}

// presenceQueue bounds the events waiting to be stored; a connection storm
// past it loses connection events (counted in the log), never blocks the
// broker.
const presenceQueue = 4096

func (p *Presence) init() {
	p.once.Do(func() {
		p.events = make(chan presenceEvent, presenceQueue)
		p.emitted = make(map[string]string)
		if p.Logger == nil {
			p.Logger = slog.Default()
		}
	})
}

// Online records that device connected. It never blocks.
func (p *Presence) Online(device string) { p.enqueue(device, "online", "connected") }

// Restarted records, for devices the hub had seen connected before it
// stopped, that those connections are gone. Call it before Run, which
// records these first, before any connection event.
func (p *Presence) Restarted(devs []string) { p.restarted = devs }

// Offline records that device's connection ended, for reason. It never blocks.
func (p *Presence) Offline(device, reason string) { p.enqueue(device, "offline", reason) }

func (p *Presence) enqueue(device, status, reason string) {
	p.init()
	select {
	case p.events <- presenceEvent{device, status, reason}:
	default:
		p.Logger.Warn("presence events queue full; a status change was not stored", "device", device, "status", status)
	}
}

// Run stores status changes until ctx ends, and sweeps for silent devices
// when Timeout is set.
func (p *Presence) Run(ctx context.Context) {
	p.init()
	var sweep <-chan time.Time
	if p.Timeout > 0 && p.Devices != nil {
		t := time.NewTicker(min(max(p.Timeout/4, 100*time.Millisecond), 10*time.Second))
		defer t.Stop()
		sweep = t.C
	}
	for _, d := range p.restarted {
		if ctx.Err() != nil {
			return
		}
		p.store(ctx, presenceEvent{d, "offline", "hub restarted"})
	}
	p.restarted = nil
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-p.events:
			p.store(ctx, ev)
		case now := <-sweep:
			p.sweep(ctx, now)
		}
	}
}

// sweep turns devices silent for Timeout offline, and devices the sweep had
// turned offline back online once they have published since.
func (p *Presence) sweep(ctx context.Context, now time.Time) {
	limit := now.Add(-p.Timeout).UnixMilli()
	for _, a := range p.Devices() {
		switch {
		case a.Status != "offline" && a.LastSeen < limit && (p.Connected == nil || !p.Connected(a.ID)):
			p.store(ctx, presenceEvent{a.ID, "offline", "inactive"})
		case a.Status == "offline" && a.LastSeen > a.StatusAt && a.LastSeen >= limit && p.lastEmitted(a.ID) == "offline":
			p.store(ctx, presenceEvent{a.ID, "online", "active"})
		}
	}
}

func (p *Presence) lastEmitted(device string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.emitted[device]
}

// store records one status change, unless the device already has that
// status and this Presence stored it last: the status may have changed
// through the device's own messages (a last will), and a change of ours may
// still be on its way to the database.
func (p *Presence) store(ctx context.Context, ev presenceEvent) {
	cur, _ := p.Lookup(ev.device)
	p.mu.Lock()
	if p.emitted[ev.device] == ev.status && cur.Status == ev.status {
		p.mu.Unlock()
		return
	}
	p.emitted[ev.device] = ev.status
	p.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e := StatusEvent{Device: ev.device, Status: ev.status, Reason: ev.reason, At: time.Now().UnixMilli()}
	if err := p.Recorder.SetStatus(wctx, e); err != nil && ctx.Err() == nil {
		p.Logger.Warn("status change not stored", "device", ev.device, "status", ev.status, "error", err)
	}
}
