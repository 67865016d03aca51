package broker

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// limitsHook holds each connection to the broker's limits before it is
// authenticated: MaxConnections and MaxKeepAlive.
type limitsHook struct {
	mqtt.HookBase
	broker *Broker
}

func (h *limitsHook) ID() string { return "telehub-limits" }

func (h *limitsHook) Provides(b byte) bool { return b == mqtt.OnConnect }

// OnConnect enforces MaxConnections with the right CONNACK (server busy,
// or server unavailable before MQTT 5) and counts the refusal, and holds the
// client's keep alive to MaxKeepAlive.
func (h *limitsHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b := h.broker
	if most := uint16(b.MaxKeepAlive / time.Second); cl.State.Keepalive == 0 || cl.State.Keepalive > most {
		// A client with no keep alive would never be found dead, and what
		// the broker writes to it would have no deadline but its own.
		cl.State.Keepalive = most
		cl.State.ServerKeepalive = true // sent in the CONNACK [MQTT-3.2.2-21]
	}
	if b.MaxConnections > 0 && b.Clients() >= b.MaxConnections {
		b.Stats.Refused(devices.RefusedTooManyConnections)
		b.logOnce("too_many_connections", "connection refused: at the connection limit", "remote", cl.Net.Remote)
		code := packets.ErrServerBusy
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable
		}
		b.server.SendConnack(cl, code, false, nil)
		return code
	}
	return nil
}

// rateLimiter is a token bucket per device: rate messages per second with
// bursts of up to burst. The zero value with rate 0 allows everything.
type rateLimiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex
	buckets map[string]*tokenBucket
}

type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (l *rateLimiter) allow(device string, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = make(map[string]*tokenBucket)
	}
	b := l.buckets[device]
	if b == nil {
		b = &tokenBucket{tokens: l.burst, last: now}
		l.buckets[device] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
