package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/telehub/telehub/devices"
)

// MaxLatestValue is the longest value kept among a device's latest values,
// in bytes of JSON; longer ones stay in their message only.
const MaxLatestValue = 1024

// Summary is one device's summary as the hub keeps it in memory.
type Summary struct {
	// ID is the backend's row id of the device.
	ID int64
	// Name is the device id.
	Name string
	// Device is the summary itself (FirstSeen .. Latest; its ID is Name).
	// Only the owner of the Summaries changes it, under Update or Apply.
	Device devices.Device
	// TrimmedTo is the backend's retention mark: no message older than
	// this ts is left. Owner only.
	TrimmedTo int64

	dirty bool // changed since last saved
}

// Summaries are the device summaries (counts, first and last seen, status,
// latest values) of every device, kept in memory by a backend's writer,
// which alone changes them, and read by its readers (the REST API, the
// presence tracker, metrics) from any goroutine. The writer saves them in
// rounds (StartRound); because they are derived from the messages, a crash
// loses nothing: the writer folds in again the messages above the last
// complete round.
//
// Every method is safe from any goroutine: on PostgreSQL the writer adds
// devices while the follower applies what every hub committed. Summary
// fields are read and changed under the lock only (Update, Apply,
// RoundPart), except TrimmedTo, the retention pass's own.
type Summaries struct {
	mu  sync.RWMutex
	m   map[string]*Summary
	seq atomic.Int64 // the highest seq applied

	round    []*Summary // devices left to save in the current round
	roundSeq int64      // every message up to this seq is in the round's devices
}

// NewSummaries returns an empty set.
func NewSummaries() *Summaries { return &Summaries{m: make(map[string]*Summary)} }

// Get returns a device's summary, or nil.
func (s *Summaries) Get(name string) *Summary {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[name]
}

// Add adds a new device's summary, and returns the one that is kept: a
// summary of that name added meanwhile wins.
func (s *Summaries) Add(d *Summary) *Summary {
	if d.Device.Latest == nil {
		d.Device.Latest = make(map[string]devices.Latest)
	}
	d.Device.ID = d.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[d.Name]; ok {
		return old
	}
	s.m[d.Name] = d
	return d
}

// Remove drops a device's summary, also from the current round.
func (s *Summaries) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.m[name]
	delete(s.m, name)
	for i, r := range s.round {
		if r == d {
			s.round = append(s.round[:i:i], s.round[i+1:]...)
			break
		}
	}
}

// All returns every summary, in no order; the slice is the caller's.
func (s *Summaries) All() []*Summary {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Summary, 0, len(s.m))
	for _, d := range s.m {
		out = append(out, d)
	}
	return out
}

// Update changes one summary under the lock and marks it for saving.
func (s *Summaries) Update(d *Summary, fn func(dv *devices.Device)) {
	s.mu.Lock()
	fn(&d.Device)
	d.dirty = true
	s.mu.Unlock()
}

// Apply folds committed messages into their devices' summaries, ds[i]
// being msgs[i]'s device.
func (s *Summaries) Apply(ds []*Summary, msgs []devices.Message) {
	if len(msgs) == 0 {
		return
	}
	s.mu.Lock()
	for i := range msgs {
		ds[i].apply(&msgs[i])
	}
	s.mu.Unlock()
	s.seq.Store(int64(msgs[len(msgs)-1].Seq))
}

// SetSeq records the highest committed seq, at load.
func (s *Summaries) SetSeq(seq devices.Seq) { s.seq.Store(int64(seq)) }

// Seq returns the highest committed seq the summaries include.
func (s *Summaries) Seq() devices.Seq { return devices.Seq(s.seq.Load()) }

// Fold applies one message found in the store that d's saved summary may
// not count yet (seq above its LastSeq); folding twice changes nothing.
// Only before the summaries are shared (at load).
func (d *Summary) Fold(m *devices.Message) bool {
	if m.Seq <= d.Device.LastSeq {
		return false
	}
	d.apply(m)
	return true
}

// apply folds one committed message into the device's summary.
func (d *Summary) apply(m *devices.Message) {
	dv := &d.Device
	if dv.MessageCount == 0 {
		dv.FirstSeen = m.Received
	}
	dv.MessageCount++
	dv.LastSeen = max(dv.LastSeen, m.Received)
	dv.LastSeq = m.Seq
	if m.Kind == devices.KindStatus {
		dv.Status = StatusText(m.Payload)
		dv.StatusAt = m.Received
	}
	for _, v := range m.Values {
		if old, ok := dv.Latest[v.Name]; ok && old.TS > v.TS || len(v.Value) > MaxLatestValue {
			continue
		}
		dv.Latest[v.Name] = devices.Latest{Value: v.Value, TS: v.TS, Seq: m.Seq}
	}
	d.dirty = true
}

// LatestJSON is the device's latest values as saved in its row.
func (d *Summary) LatestJSON() []byte {
	b, _ := json.Marshal(d.Device.Latest)
	return b
}

// StatusText reads a status payload: a bare word ("online") or a JSON
// string or {"status":"online"}; anything else is kept as "unknown".
func StatusText(p []byte) string {
	s := strings.TrimSpace(string(p))
	var js string
	if json.Unmarshal(p, &js) == nil {
		s = js
	} else {
		var obj struct{ Status string }
		if json.Unmarshal(p, &obj) == nil && obj.Status != "" {
			s = obj.Status
		}
	}
	if s == "" || len(s) > 32 || strings.ContainsAny(s, "{}[]\"\n") {
		return "unknown"
	}
	return s
}

// LatestFrom rebuilds latest values from a device's newest messages, given
// newest first (after a delete).
func LatestFrom(recent []devices.Message) map[string]devices.Latest {
	latest := make(map[string]devices.Latest)
	for i := len(recent) - 1; i >= 0; i-- { // oldest first, so newer values win
		m := &recent[i]
		if m.Kind != devices.KindTelemetry || !m.IsJSON() {
			continue
		}
		_, values, _ := devices.DecodePayload(m.Payload, m.Received)
		for _, v := range values {
			if len(v.Value) > MaxLatestValue {
				continue
			}
			if old, ok := latest[v.Name]; !ok || old.TS <= v.TS {
				latest[v.Name] = devices.Latest{Value: v.Value, TS: v.TS, Seq: m.Seq}
			}
		}
	}
	return latest
}

// StartRound begins saving every changed summary, unless a round is still
// under way; lastSeq is the highest committed seq, which every summary
// counts once the round is saved.
func (s *Summaries) StartRound(lastSeq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.round) > 0 {
		return
	}
	s.roundSeq = lastSeq
	for _, d := range s.m {
		if d.dirty {
			s.round = append(s.round, d)
		}
	}
	if len(s.round) == 0 {
		s.round = nil // nothing changed: every summary is complete up to roundSeq
	}
}

// InRound reports whether a round is under way.
func (s *Summaries) InRound() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.round) > 0
}

// SavedRow is one summary as a round saves it: a copy, taken under the
// lock.
type SavedRow struct {
	ID     int64
	Device devices.Device
	Latest []byte // Device.Latest as JSON
}

// RoundPart returns the next summaries of the round to save, at most
// maxDevices and about maxBytes of latest values, and whether they
// complete the round (so that the seq it covers, RoundSeq, can be saved
// with them). They are marked saved at once; Saved drops them from the
// round after their commit, and a failed commit leaves them in the round
// to save again.
func (s *Summaries) RoundPart(maxDevices, maxBytes int) (part []SavedRow, last bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bytes := 0
	for _, d := range s.round[:min(len(s.round), maxDevices)] {
		if bytes >= maxBytes {
			break // devices with many metrics: the rest wait for the next commit
		}
		js := d.LatestJSON()
		dv := d.Device
		dv.Latest = nil
		part = append(part, SavedRow{ID: d.ID, Device: dv, Latest: js})
		bytes += len(js)
		d.dirty = false
	}
	return part, len(part) == len(s.round)
}

// RoundSeq is the seq the current round covers once saved.
func (s *Summaries) RoundSeq() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.roundSeq
}

// Saved drops the first n summaries of the round, committed.
func (s *Summaries) Saved(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.round = s.round[n:]; len(s.round) == 0 {
		s.round = nil
	}
}

// Device returns the current summary of one device, or ErrNotFound.
func (s *Summaries) Device(id string) (*devices.Device, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.m[id]
	if !ok || d.Device.MessageCount == 0 {
		return nil, fmt.Errorf("device %q: %w", id, devices.ErrNotFound)
	}
	return d.snapshot(), nil
}

// Devices returns the current summaries of every device that has
// messages, ordered by id.
func (s *Summaries) Devices() []*devices.Device {
	s.mu.RLock()
	out := make([]*devices.Device, 0, len(s.m))
	for _, d := range s.m {
		if d.Device.MessageCount > 0 {
			out = append(out, d.snapshot())
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Activity lists every device's last-seen time and status, cheaply (no
// latest values), for devices.Presence.
func (s *Summaries) Activity() []devices.Activity {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]devices.Activity, 0, len(s.m))
	for _, d := range s.m {
		out = append(out, d.activity())
	}
	return out
}

// ActivityOf returns one device's Activity.
func (s *Summaries) ActivityOf(id string) (devices.Activity, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.m[id]
	if !ok {
		return devices.Activity{}, false
	}
	return d.activity(), true
}

// Len is the number of devices.
func (s *Summaries) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

func (d *Summary) activity() devices.Activity {
	return devices.Activity{ID: d.Name, LastSeen: d.Device.LastSeen, Status: d.Device.Status, StatusAt: d.Device.StatusAt}
}

func (d *Summary) snapshot() *devices.Device {
	c := d.Device
	c.Latest = make(map[string]devices.Latest, len(d.Device.Latest))
	for k, v := range d.Device.Latest {
		c.Latest[k] = v
	}
	return &c
}
