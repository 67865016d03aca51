package broker

import (
	"bytes"
	"errors"
	"sync"

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
	return bytes.Contains([]byte{mqtt.OnSessionEstablished, mqtt.OnDisconnect}, []byte{b})
}

// OnSessionEstablished counts the device an authenticated client connected
// as; anonymous clients count for the devices they publish for (published).
func (h *sessionHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	st := h.broker.conns.get(cl)
	if st == nil {
		return
	}
	st.established.Store(true)
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
