package broker

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// acker forwards committed QoS 1 publishes to MQTT subscribers and then
// writes their PUBACKs. The writer's dispatch goroutine hands it
// acks (add); one flusher goroutine writes them. Like group commit, acks
// that pile up while the flusher writes are sent together: each client's
// acks of a round go out in one write, in order, instead of one system call
// per message. Refusals that waited behind a PUBACK (ackOrder) go out in the
// same write, right after it.
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

	// forwarding is the committed publish being forwarded: Server.Publish
	// makes a bare packet from the inline client, and the ingest hook's
	// OnPublish (called inside it, on this goroutine) hands mochi this one
	// instead, with the publisher as origin (No Local) and its properties.
	forwarding atomic.Pointer[packets.Packet]
}

// ackItem is one tracked publish of a client: its PUBACK (unless the commit
// failed: then only what waited behind it goes out) and its place in the
// client's ackOrder.
type ackItem struct {
	cl    *mqtt.Client
	pk    packets.Packet
	order *ackOrder
	pa    *pendingAck
	ack   bool // write pk's PUBACK (false: its commit failed)
}

// slowAcks are the bytes waiting for a slow client's goroutine, and the
// publishes to mark written once they are out.
type slowAcks struct {
	buf   []byte
	items []ackItem
}

func newAcker(b *Broker) *acker {
	return &acker{b: b, slow: make(map[*mqtt.Client]*slowAcks), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// add queues it. It never blocks.
func (a *acker) add(it ackItem) {
	a.mu.Lock()
	a.q = append(a.q, it)
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
// order), then forwards every committed message. It returns items for reuse.
func (a *acker) flush(items []ackItem) []ackItem {
	if len(items) == 0 {
		return items
	}
	type batch struct {
		buf   []byte
		items []ackItem
	}
	byClient := make(map[*mqtt.Client]*batch, 16)
	order := make([]*mqtt.Client, 0, 16)
	for _, it := range items {
		bt := byClient[it.cl]
		if bt == nil {
			bt = &batch{}
			byClient[it.cl] = bt
			order = append(order, it.cl)
		}
		if it.ack {
			// PUBACK with reason code 0 and no properties: 4 bytes in MQTT 3.1.1
			// and 5 alike ([MQTT-3.4.2-1]; v5 3.4.2.1 lets a success code be omitted).
			bt.buf = append(bt.buf, packets.Puback<<4, 2, byte(it.pk.PacketID>>8), byte(it.pk.PacketID))
		}
		bt.buf = appendAcks(bt.buf, it.cl, it.order.take(it.pa))
		bt.items = append(bt.items, it)
	}
	// Forward (and retain) first: mochi only queues forwards, and a
	// device that got its PUBACK finds its retained message in place.
	for _, it := range items {
		if !it.ack {
			continue
		}
		pk := forwardPacket(it.cl, it.pk, a.b.server.Options.Capabilities.MaximumMessageExpiryInterval)
		a.forwarding.Store(&pk)
		if err := a.b.server.Publish(pk.TopicName, pk.Payload, pk.FixedHeader.Retain, pk.FixedHeader.Qos); err != nil {
			a.b.Logger.Debug("forward to subscribers failed", "topic", logTopic(pk.TopicName), "error", err)
		}
		a.forwarding.Store(nil)
	}
	for _, cl := range order {
		bt := byClient[cl]
		a.write(cl, bt.buf, bt.items)
	}
	clear(items)
	return items[:0]
}

// forwardPacket is a committed publish of cl as mochi forwards it: from cl
// (so that a No Local subscription of cl's skips it [MQTT-3.8.3-3]), with
// its properties (user properties in order, response topic, correlation
// data, payload format, content type [MQTT-3.3.2-4..20]) but not its topic
// alias, which belongs to cl's connection, and with its message expiry
// counted from now [MQTT-3.3.2-6].
func forwardPacket(cl *mqtt.Client, pk packets.Packet, maxExpiry int64) packets.Packet {
	out := pk // shares the payload and properties, which nobody changes
	out.FixedHeader.Dup = false
	out.Origin = cl.ID
	out.Properties.TopicAlias, out.Properties.TopicAliasFlag = 0, false
	out.Created = time.Now().Unix()
	if exp := min(maxExpiry, int64(pk.Properties.MessageExpiryInterval)); exp > 0 {
		out.Expiry = out.Created + exp
	}
	return out
}

// write sends b to cl under the client's own lock, so that it never
// interleaves with mochi's writes, when the lock is free; otherwise it hands
// it to the client's slow goroutine (writeSlow), behind what that one still
// has to write.
func (a *acker) write(cl *mqtt.Client, b []byte, items []ackItem) {
	a.mu.Lock()
	if s := a.slow[cl]; s != nil {
		s.buf = append(s.buf, b...)
		s.items = append(s.items, items...)
		a.mu.Unlock()
		return
	}
	if !cl.TryLock() {
		a.slow[cl] = &slowAcks{buf: b, items: items}
		a.wg.Add(1)
		a.mu.Unlock()
		go a.writeSlow(cl)
		return
	}
	a.mu.Unlock()
	a.writeLocked(cl, b, items)
	cl.Unlock()
}

// writeSlow writes cl's acks, waiting for its lock, until none are left.
func (a *acker) writeSlow(cl *mqtt.Client) {
	defer a.wg.Done()
	for {
		a.mu.Lock()
		s := a.slow[cl]
		b, items := s.buf, s.items
		s.buf, s.items = nil, nil
		if len(items) == 0 {
			delete(a.slow, cl)
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		cl.Lock()
		a.writeLocked(cl, b, items)
		cl.Unlock()
	}
}

// writeLocked writes b to cl, whose lock the caller holds, then marks the
// items' publishes written, writing any refusal queued behind them during
// the write first. A client that is gone is skipped: it resends what was
// not acknowledged when it returns.
func (a *acker) writeLocked(cl *mqtt.Client, b []byte, items []ackItem) {
	gone := cl.Closed() || cl.Net.Conn == nil
	write := func(b []byte) {
		if gone || len(b) == 0 {
			return
		}
		if _, err := cl.Net.Conn.Write(b); err != nil {
			gone = true
			if !errors.Is(err, mqtt.ErrConnectionClosed) {
				a.b.Logger.Warn("puback write failed; disconnecting client", "client", cl.ID, "error", err)
			}
			cl.Stop(err)
		}
	}
	write(b)
	for _, it := range items {
		for more := it.order.written(it.pa); more != nil; more = it.order.written(it.pa) {
			write(appendAcks(nil, cl, more))
		}
	}
}

// appendAcks encodes PUBACKs and PUBRECs for cl's protocol version, within
// what it accepts: no reason string where it asked for no problem
// information [MQTT-3.1.2-29], none either where it would make the packet
// larger than its Maximum Packet Size [MQTT-3.1.2-25].
func appendAcks(b []byte, cl *mqtt.Client, acks []packets.Packet) []byte {
	for _, ack := range acks {
		b = append(b, encodeAck(cl, ack)...)
	}
	return b
}

func encodeAck(cl *mqtt.Client, ack packets.Packet) []byte {
	ack.ProtocolVersion = cl.Properties.ProtocolVersion
	props := cl.Properties.Props
	if props.RequestProblemInfoFlag && props.RequestProblemInfo == 0 {
		ack.Properties.ReasonString = ""
	}
	for {
		var buf bytes.Buffer
		var err error
		if ack.FixedHeader.Type == packets.Pubrec {
			err = ack.PubrecEncode(&buf)
		} else {
			err = ack.PubackEncode(&buf)
		}
		if err != nil {
			return nil
		}
		if props.MaximumPacketSize > 0 && uint32(buf.Len()) > props.MaximumPacketSize && ack.Properties.ReasonString != "" {
			ack.Properties.ReasonString = ""
			continue
		}
		return buf.Bytes()
	}
}
