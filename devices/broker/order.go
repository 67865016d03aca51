package broker

import (
	"sync"

	"github.com/mochi-mqtt/server/v2/packets"
)

// ackOrder keeps one connection's acknowledgements in the order its
// publishes came [MQTT-4.6.0-2]. A QoS 1 publish on a device topic is
// acknowledged by the acker once committed, later than mochi would answer a
// publish that came after it: a refusal (written by the hub) or a publish on
// a plain topic (acknowledged by mochi). So each QoS 1 device publish is
// tracked until its PUBACK is written; refusals that come meanwhile wait
// behind it (deferAck) and plain publishes wait for it (barrier).
//
// The client's own goroutine calls track, untrack, deferAck and barrier;
// the acker calls take and written.
type ackOrder struct {
	mu      sync.Mutex
	last    *pendingAck // the latest tracked publish whose PUBACK is not written yet
	unacked int         // tracked publishes whose PUBACK is not written yet
}

// unwritten returns how many tracked publishes wait for their PUBACK.
func (o *ackOrder) unwritten() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.unacked
}

// pendingAck is a QoS 1 publish whose PUBACK is not written yet.
type pendingAck struct {
	written bool
	after   []packets.Packet // refusals of later publishes, to write right after its PUBACK
	barrier chan struct{}    // closed once written, for a later plain publish that waits
	prev    *pendingAck      // the tracked publish before it, until written
}

// track records a QoS 1 publish about to be queued for commit.
func (o *ackOrder) track() *pendingAck {
	o.mu.Lock()
	defer o.mu.Unlock()
	pa := &pendingAck{prev: o.last}
	o.last = pa
	o.unacked++
	return pa
}

// untrack takes back pa, which the writer refused to queue. Nothing can wait
// behind it yet: the client's goroutine is still handling its publish.
func (o *ackOrder) untrack(pa *pendingAck) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == pa {
		o.last = pa.prev
	}
	pa.prev, pa.written = nil, true
	o.unacked--
}

// deferAck queues ack behind the latest publish whose PUBACK is not written
// yet and reports true, or reports false when there is none: the caller
// then writes it at once.
func (o *ackOrder) deferAck(ack packets.Packet) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil || o.last.written {
		return false
	}
	o.last.after = append(o.last.after, ack)
	return true
}

// barrier returns a channel closed once every tracked PUBACK so far is
// written, or nil when none is pending.
func (o *ackOrder) barrier() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil || o.last.written {
		return nil
	}
	if o.last.barrier == nil {
		o.last.barrier = make(chan struct{})
	}
	return o.last.barrier
}

// take returns the refusals queued behind pa so far, for the acker to write
// with pa's PUBACK.
func (o *ackOrder) take(pa *pendingAck) []packets.Packet {
	o.mu.Lock()
	defer o.mu.Unlock()
	after := pa.after
	pa.after = nil
	return after
}

// written marks pa's PUBACK (and what take returned) written, unless more
// refusals were queued behind it meanwhile: those are returned, to be
// written before calling written again.
func (o *ackOrder) written(pa *pendingAck) []packets.Packet {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(pa.after) > 0 {
		after := pa.after
		pa.after = nil
		return after
	}
	pa.written, pa.prev = true, nil
	o.unacked--
	if o.last == pa {
		o.last = nil
	}
	if pa.barrier != nil {
		close(pa.barrier)
		pa.barrier = nil
	}
	return nil
}
