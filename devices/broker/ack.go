package broker

import (
	"bytes"
	"context"
	"errors"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// acker writes the PUBACKs of committed QoS 1 publishes and then forwards
// the messages to MQTT subscribers. The writer's dispatch goroutine hands it
// acks (add); one flusher goroutine writes them. Like group commit, acks
// that pile up while the flusher writes are sent together: each client's
// acks of a round go out in one write, in order, instead of one system call
// per message.
//
// The flusher never waits on one client. A client whose lock is held
// (mochi is writing to it, perhaps blocked on a client that does not read)
// gets a goroutine of its own that writes its acks, and those that follow,
// in order, and ends when none are left; the connection's write deadline
// (writeTimeoutConn) bounds how long that can take.
type acker struct {
	b    *Broker
	mu   sync.Mutex
	q    []ackItem
	slow map[*mqtt.Client]*slowAcks // clients whose acks a goroutine of their own writes
	wg   sync.WaitGroup             // those goroutines
	wake chan struct{}
	done chan struct{}
}

// slowAcks are the acks waiting for a slow client's goroutine.
type slowAcks struct{ buf []byte }

type ackItem struct {
	cl    *mqtt.Client
	pk    packets.Packet
	after []packets.Packet // refusals of later publishes, sent right after pk's PUBACK
}

func newAcker(b *Broker) *acker {
	return &acker{b: b, slow: make(map[*mqtt.Client]*slowAcks), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// add queues the PUBACK of pk to cl, followed by after. It never blocks.
func (a *acker) add(cl *mqtt.Client, pk packets.Packet, after []packets.Packet) {
	a.mu.Lock()
	a.q = append(a.q, ackItem{cl, pk, after})
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// run flushes until ctx is done, then flushes what is left and returns.
func (a *acker) run(ctx context.Context) {
	defer close(a.done)
	var buf []ackItem
	for {
		select {
		case <-a.wake:
		case <-ctx.Done():
			a.flush(a.swap(buf))
			a.wg.Wait()
			return
		}
		buf = a.flush(a.swap(buf))
	}
}

func (a *acker) swap(spare []ackItem) []ackItem {
	a.mu.Lock()
	defer a.mu.Unlock()
	q := a.q
	a.q = spare[:0]
	return q
}

// flush writes the acks of items grouped per client (keeping each client's
// order), then forwards every message. It returns items for reuse.
func (a *acker) flush(items []ackItem) []ackItem {
	if len(items) == 0 {
		return items
	}
	byClient := make(map[*mqtt.Client][]byte, 16)
	order := make([]*mqtt.Client, 0, 16)
	for _, it := range items {
		b, ok := byClient[it.cl]
		if !ok {
			order = append(order, it.cl)
		}
		// PUBACK with reason code 0 and no properties: 4 bytes in MQTT 3.1.1
		// and 5 alike ([MQTT-3.4.2-1]; v5 3.4.2.1 lets a success code be omitted).
		b = append(b, packets.Puback<<4, 2, byte(it.pk.PacketID>>8), byte(it.pk.PacketID))
		for _, ack := range it.after {
			b = appendAck(b, it.cl, ack)
		}
		byClient[it.cl] = b
	}
	for _, cl := range order {
		a.write(cl, byClient[cl])
	}
	for _, it := range items {
		pk := it.pk
		if err := a.b.server.Publish(pk.TopicName, pk.Payload, pk.FixedHeader.Retain, pk.FixedHeader.Qos); err != nil {
			a.b.Logger.Debug("forward to subscribers failed", "topic", pk.TopicName, "error", err)
		}
	}
	clear(items)
	return items[:0]
}

// write sends raw packets to cl under the client's own lock, so they never
// interleave with mochi's writes, when the lock is free; otherwise it hands
// them to the client's slow goroutine (writeSlow), behind what that one
// still has to write.
func (a *acker) write(cl *mqtt.Client, b []byte) {
	if cl.Closed() || cl.Net.Conn == nil {
		return // gone: it resends what was not acknowledged when it returns
	}
	a.mu.Lock()
	if s := a.slow[cl]; s != nil {
		s.buf = append(s.buf, b...)
		a.mu.Unlock()
		return
	}
	if !cl.TryLock() {
		a.slow[cl] = &slowAcks{buf: b}
		a.wg.Add(1)
		a.mu.Unlock()
		go a.writeSlow(cl)
		return
	}
	a.mu.Unlock()
	_, err := cl.Net.Conn.Write(b)
	cl.Unlock()
	a.failed(cl, err)
}

// writeSlow writes cl's acks, waiting for its lock, until none are left.
func (a *acker) writeSlow(cl *mqtt.Client) {
	defer a.wg.Done()
	for {
		a.mu.Lock()
		s := a.slow[cl]
		b := s.buf
		s.buf = nil
		if len(b) == 0 || cl.Closed() {
			delete(a.slow, cl)
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		cl.Lock()
		_, err := cl.Net.Conn.Write(b)
		cl.Unlock()
		a.failed(cl, err)
	}
}

// failed disconnects a client whose acks could not be written (its write
// deadline passed, or the connection broke).
func (a *acker) failed(cl *mqtt.Client, err error) {
	if err != nil && !errors.Is(err, mqtt.ErrConnectionClosed) {
		a.b.Logger.Warn("puback write failed; disconnecting client", "client", cl.ID, "error", err)
		cl.Stop(err)
	}
}

// appendAck encodes a PUBACK or PUBREC for cl's protocol version.
func appendAck(b []byte, cl *mqtt.Client, ack packets.Packet) []byte {
	ack.ProtocolVersion = cl.Properties.ProtocolVersion
	var buf bytes.Buffer
	var err error
	if ack.FixedHeader.Type == packets.Pubrec {
		err = ack.PubrecEncode(&buf)
	} else {
		err = ack.PubackEncode(&buf)
	}
	if err != nil {
		return b
	}
	return append(b, buf.Bytes()...)
}
