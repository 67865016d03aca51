package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/devices"
)

// Defaults for Subscriber fields.
const (
	DefaultClientID   = "telehub"
	DefaultMaxPayload = 256 << 10
)

// Subscriber takes telemetry from an external broker. It connects with a
// persistent session (clean session off, fixed client id) and manual acks:
// a QoS 1 message is acknowledged to the broker only after commit, so what
// the broker delivered while the hub was down, or before a crash, is
// delivered again. It subscribes inside the connect handler, so every
// automatic reconnect subscribes again.
//
// Brokers cap unacknowledged QoS 1 messages per client (Mosquitto's
// max_inflight_messages, 20 by default), and each waits for a commit, so
// raise that limit for high rates.
type Subscriber struct {
	// URL is the broker, e.g. tcp://127.0.0.1:1883 or ssl://host:8883. Required.
	URL string
	// ClientID identifies the hub's persistent session. Default DefaultClientID.
	ClientID string
	// Username and Password authenticate the hub; empty means none.
	Username, Password string
	// ShareGroup, when set, subscribes through $share/ShareGroup/... so that
	// several hubs split one stream.
	ShareGroup string
	// Scheme maps topics to devices. Default devices.DefaultScheme().
	Scheme *devices.Scheme
	// Writer receives the messages. Required.
	Writer devices.MessageWriter
	// MaxPayload is the largest payload stored, in bytes; larger ones are
	// acknowledged, counted and discarded. Default DefaultMaxPayload.
	MaxPayload int
	// Stats counts received and refused messages. Optional.
	Stats *devices.Stats
	// Commands receives the devices' answers to commands and their client
	// attributes, which the Subscriber subscribes to as well
	// (devices/+/commands/+/response, devices/+/attributes). Optional.
	Commands Downlink
	// Logger defaults to slog.Default() with component=ingest.
	Logger *slog.Logger

	// newClient builds the paho client: paho.NewClient, the seam for a fake
	// client in tests of reconnect edge cases.
	newClient func(*paho.ClientOptions) paho.Client

	shown     string // URL without its password, for logs
	client    paho.Client
	ctx       context.Context
	cancel    context.CancelFunc
	connected atomic.Bool
	draining  atomic.Bool
	throttle  devices.Throttle
	lastErr   atomic.Pointer[string]
	published publishedSet // commands published through the broker
}

// publishedSet remembers the last maxPublished commands published, so that
// each goes out once per hub process: the broker keeps a QoS 1 message for
// the device's persistent session, and the hub sees no PUBACK to tell
// delivered from not (a restarted hub publishes the sent ones again: at
// least once).
type publishedSet struct {
	mu    sync.Mutex
	ids   map[int64]bool
	order []int64 // ring of ids, oldest at next
	next  int
}

const maxPublished = 1 << 16

// add records id and reports whether it was not there yet.
func (p *publishedSet) add(id int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ids[id] {
		return false
	}
	if p.ids == nil {
		p.ids, p.order = make(map[int64]bool), make([]int64, 0, 1024)
	}
	if len(p.order) < maxPublished {
		p.order = append(p.order, id)
	} else {
		delete(p.ids, p.order[p.next])
		p.order[p.next] = id
		p.next = (p.next + 1) % maxPublished
	}
	p.ids[id] = true
	return true
}

// remove forgets id (its publish failed: it may go again).
func (p *publishedSet) remove(id int64) {
	p.mu.Lock()
	delete(p.ids, id)
	p.mu.Unlock()
}

// New returns a Subscriber for url writing to w, other fields at defaults.
func New(url string, w devices.MessageWriter) *Subscriber {
	return &Subscriber{
		URL:        url,
		ClientID:   DefaultClientID,
		Scheme:     devices.DefaultScheme(),
		Writer:     w,
		MaxPayload: DefaultMaxPayload,
		Logger:     slog.Default().With("component", "ingest"),
	}
}

// Open validates the configuration and starts connecting. It does not wait
// for the broker: when it is unreachable the Subscriber keeps retrying in the
// background and Connected reports false until it succeeds.
func (s *Subscriber) Open() error {
	if s.Writer == nil {
		return errors.New("open ingest: writer required")
	}
	u, err := url.Parse(s.URL)
	if err != nil || u.Host == "" {
		return errors.New("open ingest: broker url: want scheme://host:port, e.g. tcp://127.0.0.1:1883") // it may hold a password: not shown
	}
	s.shown = u.Redacted()
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return fmt.Errorf("open ingest: broker url %q: unknown scheme %q", s.shown, u.Scheme)
	}
	if s.ClientID == "" {
		s.ClientID = DefaultClientID
	}
	if s.Scheme == nil {
		s.Scheme = devices.DefaultScheme()
	}
	if s.MaxPayload <= 0 {
		s.MaxPayload = DefaultMaxPayload
	}
	if s.Stats == nil {
		s.Stats = new(devices.Stats)
	}
	if s.Logger == nil {
		s.Logger = slog.Default().With("component", "ingest")
	}
	if s.newClient == nil {
		s.newClient = paho.NewClient
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	opts := paho.NewClientOptions().
		AddBroker(s.URL).
		SetClientID(s.ClientID).
		SetUsername(s.Username).
		SetPassword(s.Password).
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true). // the handler only queues; ordered delivery keeps per-device order
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOnConnectHandler(s.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.connected.Store(false)
			s.Logger.Warn("lost connection to broker; reconnecting", "broker", s.shown, "error", err)
		}).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
			s.Logger.Debug("reconnecting to broker", "broker", s.shown)
		})
	s.client = s.newClient(opts)
	s.client.Connect() // with ConnectRetry the token completes only once connected
	s.Logger.Info("connecting to external broker", "broker", s.shown, "client_id", s.ClientID)
	return nil
}

// Downlink takes what devices send back; devices.Downlink implements it.
type Downlink interface {
	Replied(device string, id int64, payload []byte)
	Reported(device string, payload []byte)
}

// downlinkFilters are the topics of answers and client attributes.
var downlinkFilters = []string{"devices/+/commands/+/response", "devices/+/attributes"}

func (s *Subscriber) filters() []string {
	fs := s.Scheme.Filters()
	if s.Commands != nil {
		fs = append(fs, downlinkFilters...)
	}
	if s.ShareGroup != "" {
		for i, f := range fs {
			fs[i] = "$share/" + s.ShareGroup + "/" + f
		}
	}
	return fs
}

func (s *Subscriber) onConnect(c paho.Client) {
	subs := make(map[string]byte)
	for _, f := range s.filters() {
		subs[f] = 1
	}
	tok := c.SubscribeMultiple(subs, s.handle)
	go func() { // the connect handler must not block on the subscription round trip
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			msg := fmt.Sprintf("subscribe %v: %v", s.filters(), tok.Error())
			s.lastErr.Store(&msg)
			s.Logger.Error("subscribe failed; reconnecting", "error", tok.Error())
			c.Disconnect(0)
			return
		}
		s.connected.Store(true)
		s.Logger.Info("subscribed on external broker", "broker", s.shown, "filters", s.filters())
	}()
}

// handle runs on paho's router goroutine. It decodes and queues; for QoS 1
// and 2 it waits for room in the queue (back-pressure) and acknowledges
// after commit.
func (s *Subscriber) handle(_ paho.Client, m paho.Message) {
	if s.Commands != nil && !m.Retained() {
		if device, id, ok := devices.ParseCommandResponse("", m.Topic()); ok {
			s.Commands.Replied(device, id, m.Payload())
			m.Ack()
			return
		}
		if device, _, _, ok := devices.ParseAttributeTopic("", m.Topic()); ok {
			s.Commands.Reported(device, m.Payload())
			m.Ack()
			return
		}
	}
	device, kind, ours, err := s.Scheme.ParseTopic(m.Topic())
	if !ours {
		m.Ack()
		return
	}
	if m.Retained() {
		// A retained message sent because the hub (re)subscribed: a copy
		// of one published earlier, which the hub stored when it was
		// published (messages forwarded live carry no retain flag
		// [MQTT-3.3.1-9]). Storing it would add it again at every
		// reconnect.
		m.Ack()
		return
	}
	s.Stats.Received()
	if err != nil {
		s.refuse(m, device, devices.ReasonInvalidTopic, err.Error())
		return
	}
	if len(m.Payload()) > s.MaxPayload {
		s.refuse(m, device, devices.ReasonTooLarge, "payload exceeds the size limit")
		return
	}
	if s.draining.Load() {
		s.Stats.Rejected(devices.ReasonShuttingDown) // not acknowledged: the broker delivers it again
		return
	}
	now := time.Now().UnixMilli()
	ts, values, flags := devices.DecodePayload(m.Payload(), now)
	p := &devices.Pending{Message: devices.Message{
		Device: device, Topic: m.Topic(), Kind: kind, TS: ts, Received: now,
		QoS: m.Qos(), Flags: flags, Payload: m.Payload(), Values: values,
	}}
	if m.Qos() == 0 {
		if err := s.Writer.TryWrite(p); err != nil {
			reason := devices.RefusalReason(err)
			s.Stats.Rejected(reason)
			s.logRefusal(device, reason, err.Error())
		}
		return
	}
	p.Done = func(_ *devices.Message, err error) {
		if err == nil {
			m.Ack()
		}
	}
	if err := s.Writer.Write(s.ctx, p); err != nil {
		switch reason := devices.RefusalReason(err); reason {
		case devices.ReasonTooManyMetrics, devices.ReasonMetricName:
			s.refuse(m, device, reason, err.Error()) // acknowledged: it would only come again
		default:
			s.Stats.Rejected(reason) // not acknowledged: the broker delivers it again
		}
	}
}

func (s *Subscriber) refuse(m paho.Message, device string, reason devices.Reason, detail string) {
	s.Stats.Rejected(reason)
	s.logRefusal(device+"|"+m.Topic(), reason, detail)
	m.Ack() // a refused message would only be delivered again
}

func (s *Subscriber) logRefusal(key string, reason devices.Reason, detail string) {
	if len(detail) > 256 { // it may quote a topic, up to 64 KiB
		detail = detail[:256] + "..."
	}
	if len(key) > 256 {
		key = key[:256] + "..."
	}
	if ok, suppressed := s.throttle.Allow(string(reason)+"|"+key, time.Now()); ok {
		s.Logger.Warn("message not stored", "reason", string(reason), "key", key, "detail", detail, "suppressed_since_last", suppressed)
	}
}

// Connected reports whether the Subscriber is connected and subscribed.
func (s *Subscriber) Connected() bool {
	return s.connected.Load() && s.client != nil && s.client.IsConnectionOpen()
}

// Drain stops taking messages; what arrives from now on is not acknowledged
// and the broker delivers it again to the next session. Call it before
// closing the Writer.
func (s *Subscriber) Drain() { s.draining.Store(true) }

// Close drains and disconnects, keeping the session (and its subscriptions)
// on the broker. Call it after the Writer has acknowledged what it stored.
// It is safe after a failed Open.
//
// Before disconnecting it waits for the broker to answer an UNSUBSCRIBE of a
// topic the hub never subscribed to. The broker answers only after it has
// processed every PUBACK the hub sent before, on that connection. Without
// this barrier a quickly restarted hub takes the session over while the
// broker has not yet read the old connection's last PUBACKs; Mosquitto then
// drops them and delivers those (already stored) messages a second time.
func (s *Subscriber) Close(ctx context.Context) error {
	s.Drain()
	if s.cancel != nil {
		s.cancel()
	}
	if s.client == nil {
		return nil
	}
	if s.client.IsConnectionOpen() {
		wait := 5 * time.Second
		if d, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(d))
		}
		tok := s.client.Unsubscribe("telehub/sync/" + s.ClientID)
		if !tok.WaitTimeout(wait) {
			s.Logger.Warn("broker did not confirm the last acknowledgements before disconnect; it may deliver some stored messages again")
		}
	}
	s.client.Disconnect(250)
	return nil
}

// SendCommand implements devices.DeviceSender through the external broker:
// the command is published on devices/{id}/commands/{n}, QoS 1, and counts
// as sent once the broker acknowledged it. The hub sees only its broker's
// PUBACK, not the device's, so such a command goes from sent to replied
// (or expired), never to delivered. It is published once per hub process
// (publishedSet): 0 for one published already.
func (s *Subscriber) SendCommand(c *devices.Command) int {
	if !s.connected.Load() || !s.published.add(c.ID) {
		return 0
	}
	payload, _ := json.Marshal(struct {
		ID     int64           `json:"id"`
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}{c.ID, c.Method, c.Params})
	tok := s.client.Publish("devices/"+c.Device+"/commands/"+strconv.FormatInt(c.ID, 10), 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.published.remove(c.ID)
		return 0
	}
	return 1
}

// Listens implements devices.DeviceSender: through an external broker the
// hub cannot see subscriptions, so every device may be sent commands while
// the hub is connected (the broker keeps them for a persistent session).
func (s *Subscriber) Listens(string) bool { return s.connected.Load() }

// SendAttributes implements devices.DeviceSender through the external
// broker: the device's shared attributes, all of them, retained on
// devices/{id}/attributes/desired, so that the device gets them whenever it
// subscribes (the hub cannot see its subscriptions there).
func (s *Subscriber) SendAttributes(device string, full, _ map[string]json.RawMessage) int {
	if !s.connected.Load() {
		return 0
	}
	payload, _ := json.Marshal(full)
	tok := s.client.Publish("devices/"+device+"/attributes/desired", 1, true, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return 0
	}
	return 1
}
