package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// DeviceAuthenticator returns the device a token belongs to, or an error
// wrapping devices.ErrUnauthorized. store.Credentials implements it.
type DeviceAuthenticator interface {
	AuthenticateDevice(ctx context.Context, token string) (string, error)
}

// ThingsBoard-style topic: a device authenticated by its token publishes
// telemetry here without naming itself.
const meTelemetryTopic = "v1/devices/me/telemetry"

// authHook decides who connects and what each client may publish and
// subscribe to. Deny by default: a client that authenticated as a device may
// publish only to that device's topics and subscribe only to its command
// topics (devices/{id}/commands/...). Anonymous clients exist only where
// RequireAuth is off (the loopback default); they may use any topic but '$'
// ones, like a plain broker.
//
// mochi's own auth ledger is not used: it keeps passwords in clear, treats
// an empty or "*" rule as matching anything and allows what no rule matches.
type authHook struct {
	mqtt.HookBase
	broker *Broker

	clients  sync.Map // *mqtt.Client -> *clientState, for every accepted client
	limiter  rateLimiter
	presence presenceCount
	throttle devices.Throttle
}

// Presence hears which devices connect and disconnect; devices.Presence
// implements it.
type Presence interface {
	Online(device string)
	Offline(device, reason string)
}

func (h *authHook) ID() string { return "telehub-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect, mqtt.OnPacketRead}, []byte{b})
}

// clientState is what the hub knows of one connection. Only the client's
// own goroutine (its packet reads, then OnDisconnect) touches seen.
type clientState struct {
	device string              // the device it authenticated as, or ""
	seen   map[string]struct{} // devices it published for, for presence (bounded)

	mu   sync.Mutex  // guards last: the client's goroutine sets it, the writer's dispatch settles it
	last *pendingAck // the client's latest QoS 1 publish still waiting for its commit
}

// pendingAck is a QoS 1 publish waiting for its commit, and the refusals
// (negative or discarding acknowledgements) of publishes that came after it:
// PUBACKs must leave in the order the publishes came [MQTT-4.6.0-2], so those
// go out right after its own PUBACK.
type pendingAck struct {
	done  bool
	after []packets.Packet
	prev  *pendingAck // the client's publish waiting before this one, until settled
}

// track records a QoS 1 publish of cl being queued for commit.
func (h *authHook) track(cl *mqtt.Client) *pendingAck {
	st := h.state(cl)
	if st == nil {
		return nil
	}
	st.mu.Lock()
	pa := &pendingAck{prev: st.last}
	st.last = pa
	st.mu.Unlock()
	return pa
}

// untrack takes back pa, whose publish the writer refused to queue: the
// client's latest pending publish is the one before it again, and the
// refusals that waited behind pa wait behind that one, or are returned
// to be sent now when none waits.
func (h *authHook) untrack(cl *mqtt.Client, pa *pendingAck) []packets.Packet {
	st := h.state(cl)
	if st == nil || pa == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	pa.done = true
	after := pa.after
	pa.after = nil
	if st.last == pa {
		st.last = pa.prev
	}
	pa.prev = nil
	if st.last != nil && !st.last.done {
		st.last.after = append(st.last.after, after...)
		return nil
	}
	return after
}

// settle marks pa committed (or failed) and returns the refusals to send
// after its PUBACK.
func (h *authHook) settle(cl *mqtt.Client, pa *pendingAck) []packets.Packet {
	st := h.state(cl)
	if st == nil || pa == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	pa.done = true
	pa.prev = nil // settled in order: nothing before it still waits
	if st.last == pa {
		st.last = nil
	}
	after := pa.after
	pa.after = nil
	return after
}

// deferAck queues ack behind cl's QoS 1 publishes still waiting for their
// commit and reports true, or reports false when none waits: the caller
// then sends it at once.
func (h *authHook) deferAck(cl *mqtt.Client, ack packets.Packet) bool {
	st := h.state(cl)
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.last == nil || st.last.done {
		return false
	}
	st.last.after = append(st.last.after, ack)
	return true
}

// refusalAck is the acknowledgement of a refused QoS 1 or 2 publish: on MQTT
// 5 with the reason code, on 3.1.1 a plain one (the publish is discarded,
// [MQTT-3.3.5-2]).
func refusalAck(cl *mqtt.Client, pk packets.Packet, code packets.Code, reason string) packets.Packet {
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}
	if pk.FixedHeader.Qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
	}
	if cl.Properties.ProtocolVersion == 5 {
		ack.ReasonCode = code.Code
		ack.Properties.ReasonString = reason
	}
	return ack
}

// maxDevicesPerConnection bounds the devices one (gateway) connection is
// tracked as carrying for online/offline status.
const maxDevicesPerConnection = 64

func (h *authHook) state(cl *mqtt.Client) *clientState {
	if v, ok := h.clients.Load(cl); ok {
		return v.(*clientState)
	}
	return nil
}

// device returns the device cl authenticated as, or "".
func (h *authHook) device(cl *mqtt.Client) string {
	if st := h.state(cl); st != nil {
		return st.device
	}
	return ""
}

// published notes that cl publishes for device; the first time, the device
// counts as connected (for anonymous clients, which name their device only
// in their topics).
func (h *authHook) published(cl *mqtt.Client, device string) {
	st := h.state(cl)
	if st == nil || h.broker.Presence == nil {
		return
	}
	if _, ok := st.seen[device]; ok || len(st.seen) >= maxDevicesPerConnection {
		return
	}
	st.seen[device] = struct{}{}
	h.presence.add(device)
}

// OnConnect enforces MaxConnections with the right CONNACK (server busy,
// or server unavailable before MQTT 5) and counts the refusal, and holds the
// client's keep alive to MaxKeepAlive.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b := h.broker
	if most := uint16(b.MaxKeepAlive / time.Second); cl.State.Keepalive == 0 || cl.State.Keepalive > most {
		// A client with no keep alive would never be found dead, and what
		// the broker writes to it would have no deadline but its own.
		cl.State.Keepalive = most
		cl.State.ServerKeepalive = true // sent in the CONNACK [MQTT-3.2.2-21]
	}
	if b.MaxConnections > 0 && b.Clients() >= b.MaxConnections {
		b.Stats.Refused(devices.RefusedTooManyConnections)
		h.log("too_many_connections", "connection refused: at the connection limit", "remote", cl.Net.Remote)
		code := packets.ErrServerBusy
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable
		}
		b.server.SendConnack(cl, code, false, nil)
		return code
	}
	return nil
}

// OnConnectAuthenticate accepts, in this order: a verified client
// certificate (its common name is the device id); a device token as the
// password (the username, if any, must be that device's id); a device
// token as the username (ThingsBoard style). Credentials that do not check
// out are refused even where anonymous access is allowed.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	b := h.broker
	device, presented, err := h.authenticate(cl, pk)
	switch {
	case err != nil:
		b.Stats.Refused(devices.RefusedBadCredentials)
		// The username may be a token: never log it.
		h.log("bad_credentials", "connection refused: "+err.Error(), "remote", cl.Net.Remote, "client", cl.ID)
		return false
	case device != "" && pk.Connect.WillFlag && !h.mayPublish(device, pk.Connect.WillTopic):
		// The broker publishes the will itself, past OnACLCheck: check it now.
		b.Stats.Refused(devices.RefusedBadCredentials)
		h.log("will|"+device, "connection refused: last will on another device's topic", "device", device, "topic", pk.Connect.WillTopic)
		return false
	case device == "" && (presented || b.RequireAuth):
		b.Stats.Refused(devices.RefusedBadCredentials)
		h.log("bad_credentials", "connection refused: no device credentials", "remote", cl.Net.Remote, "client", cl.ID)
		return false
	}
	st := &clientState{device: device, seen: map[string]struct{}{}}
	h.clients.Store(cl, st)
	if device != "" && b.Presence != nil {
		st.seen[device] = struct{}{}
		h.presence.add(device)
	}
	return true
}

var errBadToken = errors.New("unknown or revoked device token")

// authenticate returns the device cl proves to be, whether it presented
// credentials at all, and an error for credentials that do not hold.
func (h *authHook) authenticate(cl *mqtt.Client, pk packets.Packet) (device string, presented bool, err error) {
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		if len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
			cn := st.PeerCertificates[0].Subject.CommonName
			if err := devices.ValidateDeviceID(cn); err != nil {
				return "", true, errors.New("client certificate common name is not a valid device id")
			}
			if user := string(pk.Connect.Username); user != "" && user != cn {
				return "", true, errors.New("username differs from the client certificate's device")
			}
			return cn, true, nil
		}
	}
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	token := pass
	if token == "" {
		token = user
		user = ""
	}
	if token == "" {
		return "", false, nil
	}
	if h.broker.Auth == nil {
		return "", true, errors.New("device credentials are not configured")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	device, err = h.broker.Auth.AuthenticateDevice(ctx, token)
	if errors.Is(err, devices.ErrUnauthorized) {
		return "", true, errBadToken
	} else if err != nil {
		return "", true, errors.New("credential lookup failed")
	}
	if user != "" && user != device {
		return "", true, errors.New("username is not the token's device")
	}
	return device, true, nil
}

// OnACLCheck allows an authenticated device to subscribe to its own command
// topics only; anonymous clients (where allowed) everything. Publishes are
// checked in the ingest hook's OnPublish (publishAllowed), which sees the
// topic after alias resolution and keeps the order of acknowledgements.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	device := h.device(cl)
	if device == "" {
		return !h.broker.RequireAuth
	}
	if write {
		return true
	}
	if h.maySubscribe(device, topic) {
		return true
	}
	h.broker.Stats.Refused(devices.RefusedSubscribe)
	h.log("subscribe|"+device, "subscribe refused: not the device's command topic", "device", device, "filter", topic)
	return false
}

func (h *authHook) mayPublish(device, topic string) bool {
	if topic == meTelemetryTopic {
		return true
	}
	d, _, ours, err := h.broker.Scheme.ParseTopic(topic)
	return ours && err == nil && d == device
}

// maySubscribe allows filters within devices/{device}/commands/.
func (h *authHook) maySubscribe(device, filter string) bool {
	prefix := "devices/" + device + "/commands/"
	return strings.HasPrefix(filter, prefix) && !strings.ContainsAny(filter[:len(prefix)], "+#")
}

// OnDisconnect runs on the client's goroutine once it stopped reading. The
// devices it carried count one connection less; at none they turn offline.
func (h *authHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	st := h.state(cl)
	if st == nil {
		return
	}
	h.clients.Delete(cl)
	reason := "disconnected"
	if err != nil && !errors.Is(err, packets.CodeDisconnect) {
		reason = "connection lost"
	}
	for device := range st.seen {
		h.presence.remove(device, reason)
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

// OnPacketRead answers publishes to topics starting with '$' (reserved for
// the broker, such as $SYS), which mochi would drop without a word: MQTT 5
// clients get PUBACK/PUBREC "not authorised" (0x87), MQTT 3.1.1 clients a
// plain acknowledgement ([MQTT-3.3.5-2]); the message is counted and dropped.
func (h *authHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || !strings.HasPrefix(pk.TopicName, "$") || cl.Net.Inline {
		return pk, nil
	}
	h.broker.Stats.Received()
	h.broker.Stats.Rejected(devices.ReasonReservedTopic)
	h.log("reserved|"+cl.ID, "publish refused: reserved topic", "client", cl.ID, "topic", pk.TopicName)
	if pk.FixedHeader.Qos > 0 {
		ack := refusalAck(cl, pk, packets.ErrNotAuthorized, "topics starting with $ are reserved for the broker")
		if !h.deferAck(cl, ack) {
			cl.WritePacket(ack)
		}
	}
	return pk, nil // mochi drops it: not a valid publish topic
}

func (h *authHook) log(key, msg string, args ...any) {
	if ok, suppressed := h.throttle.Allow(key, time.Now()); ok {
		h.broker.Logger.Warn(msg, append(args, "suppressed_since_last", suppressed)...)
	}
}

// disconnect ends every connection authenticated as device and returns how
// many there were.
func (h *authHook) disconnect(device string) int {
	n := 0
	h.clients.Range(func(k, v any) bool {
		if v.(*clientState).device == device {
			h.broker.server.DisconnectClient(k.(*mqtt.Client), packets.ErrNotAuthorized)
			n++
		}
		return true
	})
	return n
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
