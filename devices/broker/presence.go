package broker

import (
	"bytes"
	"cmp"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Presence hears which devices connect and disconnect; devices.Presence
// implements it.
type Presence interface {
	Online(device string)
	Offline(device, reason string)
}

// maxDevicesPerConnection bounds the devices one (gateway) connection is
// tracked as carrying for online/offline status.
const maxDevicesPerConnection = 64

// sessionHook tells Presence when a device's first connection starts and
// its last one ends. A connection counts from its CONNACK: one whose CONNACK
// could not be written (the client reset right after CONNECT) never
// counted, so it is never left "online" (mochi calls OnDisconnect only for
// established sessions). It also ends each connection's entry in the
// registry.
type sessionHook struct {
	mqtt.HookBase
	broker *Broker
	count  presenceCount
}

func (h *sessionHook) ID() string { return "telehub-session" }

func (h *sessionHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnClientExpired, mqtt.OnPacketEncode}, []byte{b})
}

// OnPacketEncode announces TopicAliasMaximum in every successful MQTT 5
// CONNACK, which mochi leaves out: a client must otherwise assume 0
// [MQTT-3.2.2-17] and may not use aliases at all.
func (h *sessionHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode == 0 && cl.Properties.ProtocolVersion == 5 {
		pk.Properties.TopicAliasMaximum = TopicAliasMaximum
	}
	return pk
}

// OnClientExpired drops an expired session's subscriptions too; mochi only
// forgets the client, leaving its filters in the topic index.
func (h *sessionHook) OnClientExpired(cl *mqtt.Client) {
	h.broker.server.UnsubscribeClient(cl)
}

// capSessions drops the sessions away longest once more than MaxSessions
// are kept for clients that went away, down to 90% of it.
func (h *sessionHook) capSessions() {
	s := h.broker.server
	kept := s.Clients.Len() - int(atomic.LoadInt64(&s.Info.ClientsConnected))
	if kept <= h.broker.MaxSessions {
		return
	}
	type away struct {
		cl    *mqtt.Client
		since int64
	}
	var gone []away
	for _, cl := range s.Clients.GetAll() {
		if t := cl.StopTime(); t > 0 && cl.Closed() {
			gone = append(gone, away{cl, t})
		}
	}
	slices.SortFunc(gone, func(a, b away) int { return cmp.Compare(a.since, b.since) })
	n := len(gone) - h.broker.MaxSessions*9/10
	for _, g := range gone[:max(0, min(n, len(gone)))] {
		s.UnsubscribeClient(g.cl)
		g.cl.ClearInflights()
		s.Clients.Delete(g.cl.ID)
	}
	if n > 0 {
		h.broker.logOnce("max_sessions", "sessions kept for clients that went away exceed the cap; dropped the oldest", "dropped", n, "max_sessions", h.broker.MaxSessions)
	}
}

// OnSessionEstablished counts the device an authenticated client connected
// as; anonymous clients count for the devices they publish for (published).
func (h *sessionHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	st := h.broker.conns.get(cl)
	if st == nil {
		return
	}
	st.established.Store(true)
	h.capSessions()
	if st.device != "" && h.broker.Presence != nil {
		st.seen[st.device] = struct{}{}
		h.count.add(st.device)
	}
}

// published notes that cl publishes for device; the first time, the device
// counts as connected (for anonymous clients, which name their device only
// in their topics). It runs on the client's goroutine.
func (h *sessionHook) published(cl *mqtt.Client, device string) {
	st := h.broker.conns.get(cl)
	if st == nil || h.broker.Presence == nil || !st.established.Load() {
		return
	}
	if _, ok := st.seen[device]; ok || len(st.seen) >= maxDevicesPerConnection {
		return
	}
	st.seen[device] = struct{}{}
	h.count.add(device)
}

// OnDisconnect runs on the client's goroutine once it stopped reading. The
// devices it carried count one connection less; at none they turn offline.
func (h *sessionHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	st := h.broker.conns.get(cl)
	if st == nil {
		return
	}
	h.broker.conns.remove(cl)
	reason := "disconnected"
	if err != nil && !errors.Is(err, packets.CodeDisconnect) {
		reason = "connection lost"
	}
	for device := range st.seen {
		h.count.remove(device, reason)
	}
}

// presenceCount counts each device's connections, so that a device with a
// second connection (or a session taken over) stays online until its last
// one ends.
type presenceCount struct {
	p     Presence // nil: nobody listens
	mu    sync.Mutex
	conns map[string]int
}

func (c *presenceCount) add(device string) {
	c.mu.Lock()
	if c.conns == nil {
		c.conns = make(map[string]int)
	}
	c.conns[device]++
	first := c.conns[device] == 1
	c.mu.Unlock()
	if first && c.p != nil {
		c.p.Online(device)
	}
}

func (c *presenceCount) connected(device string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[device] > 0
}

func (c *presenceCount) devices() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

func (c *presenceCount) remove(device, reason string) {
	c.mu.Lock()
	c.conns[device]--
	last := c.conns[device] <= 0
	if last {
		delete(c.conns, device)
	}
	c.mu.Unlock()
	if last && c.p != nil {
		c.p.Offline(device, reason)
	}
}
