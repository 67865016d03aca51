package broker

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// CommandHandler follows commands and attributes to and from devices;
// devices.Downlink implements it. Its methods must not block for long.
type CommandHandler interface {
	// Listening: the device subscribed to its command topics.
	Listening(device string)
	// Delivered: the device acknowledged command id (its PUBACK).
	Delivered(device string, id int64)
	// Replied: the device answered command id.
	Replied(device string, id int64, payload []byte)
	// AttributesListening: the device subscribed to its shared attributes.
	AttributesListening(device string)
	// Reported: the device published its client attributes.
	Reported(device string, payload []byte)
	// AttributesRequested: the device asked for attributes (ThingsBoard's
	// request n); reply publishes the answer to the asking connection.
	AttributesRequested(device string, payload []byte, reply func([]byte))
}

// Command topics. Telehub's own: the hub publishes command N for device X
// on devices/X/commands/N, payload {"id":N,"method":..,"params":..}, and
// the device answers on devices/X/commands/N/response. ThingsBoard's, for
// a device that authenticated with its token: requests on
// v1/devices/me/rpc/request/N, payload {"method":..,"params":..}, answers
// on v1/devices/me/rpc/response/N (devices.ParseCommandResponse).

// What a connection listens to, in which topic style.
const (
	styleTelehub     = 1 << iota // commands on devices/X/commands/N
	styleThingsBoard             // commands on v1/devices/me/rpc/request/N
	styleAttrTelehub             // shared attributes on devices/X/attributes/desired
	styleAttrTB                  // shared attributes on v1/devices/me/attributes

	styleCommands   = styleTelehub | styleThingsBoard
	styleAttributes = styleAttrTelehub | styleAttrTB
)

// downlink is the broker's side of commands: which connections listen to
// which device's commands, and which packets in flight carry which
// command.
type downlink struct {
	mu        sync.Mutex
	listeners map[string]map[*mqtt.Client]int // device -> connection -> styles

	sendMu  sync.Mutex              // one command publish at a time (sending), none while a connection subscribes
	sending atomic.Pointer[sending] // the command publish under way
	// inflight maps a command packet in flight, by client id (the session,
	// which outlives a connection) and packet id, to its command; sentOn
	// holds the same by client id and command id.
	inflight sync.Map // inflightKey -> inflightCmd
	sentOn   sync.Map // sentKey -> struct{}
}

type sentKey struct {
	client string
	id     int64
}

type sending struct {
	cl    *mqtt.Client
	topic string
	id    int64
}

type inflightKey struct {
	client string
	packet uint16
}

type inflightCmd struct {
	device string
	id     int64
}

// listen records that cl listens to device's commands with style.
// listen records that cl listens to device's topics of style and returns
// the styles it did not listen with before.
func (d *downlink) listen(cl *mqtt.Client, st *connState, device string, style int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listeners == nil {
		d.listeners = make(map[string]map[*mqtt.Client]int)
	}
	m := d.listeners[device]
	if m == nil {
		m = make(map[*mqtt.Client]int)
		d.listeners[device] = m
	}
	fresh := style &^ m[cl]
	if fresh == 0 {
		return 0
	}
	if m[cl] == 0 {
		st.cmdDevices = append(st.cmdDevices, device)
	}
	m[cl] |= style
	return fresh
}

// forget drops a closed connection.
func (d *downlink) forget(cl *mqtt.Client, st *connState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, device := range st.cmdDevices {
		if m := d.listeners[device]; m != nil {
			delete(m, cl)
			if len(m) == 0 {
				delete(d.listeners, device)
			}
		}
	}
}

func (d *downlink) of(device string) map[*mqtt.Client]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[*mqtt.Client]int, len(d.listeners[device]))
	for cl, s := range d.listeners[device] {
		out[cl] = s
	}
	return out
}

// SendCommand implements devices.CommandSender: c goes to each connection
// that listens to its device's commands, at most once per session while it
// is in flight there (mochi resends what is in flight when a session
// resumes).
func (b *Broker) SendCommand(c *devices.Command) int {
	if b.server == nil {
		return 0
	}
	sent := 0
	for cl, styles := range b.cmds.of(c.Device) {
		if styles&styleCommands == 0 || cl.Closed() || b.cmds.inFlight(cl.ID, c.ID) {
			continue
		}
		topic, payload := commandPacket(c, styles)
		if err := b.publishTo(cl, topic, payload, c.ID); errors.Is(err, errInFlight) {
			continue // another send got there first
		} else if err != nil {
			b.logOnce("command|"+c.Device, "command not published", "device", c.Device, "id", c.ID, "error", err)
			continue
		}
		sent++
	}
	return sent
}

// Listens implements devices.DeviceSender: a connection of the device
// listens to its commands.
func (b *Broker) Listens(device string) bool {
	for _, styles := range b.cmds.of(device) {
		if styles&styleCommands != 0 {
			return true
		}
	}
	return false
}

// errInFlight: the command is in flight on that connection already.
var errInFlight = errors.New("command in flight on this connection")

// publishTo publishes to one connection only, QoS 1, through the broker
// (so that mochi keeps the packet in flight and resends it with the
// session): while it runs, the ACL hides the topic from every other
// connection. cmd, when not 0, is the command the packet carries.
func (b *Broker) publishTo(cl *mqtt.Client, topic string, payload []byte, cmd int64) error {
	b.cmds.sendMu.Lock()
	defer b.cmds.sendMu.Unlock()
	// Checked again under the lock: two sends of one command (a new
	// command and its device subscribing, at once) both passed the check
	// before either packet was in flight.
	if cmd != 0 && b.cmds.inFlight(cl.ID, cmd) {
		return errInFlight
	}
	b.cmds.sending.Store(&sending{cl: cl, topic: topic, id: cmd})
	defer b.cmds.sending.Store(nil)
	return b.server.Publish(topic, payload, false, 1)
}

// commandPacket is c as published in the style the connection listens
// with, Telehub's when it listens with both.
func commandPacket(c *devices.Command, styles int) (string, []byte) {
	id := strconv.FormatInt(c.ID, 10)
	if styles&styleTelehub != 0 {
		payload, _ := json.Marshal(struct {
			ID     int64           `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}{c.ID, c.Method, c.Params})
		return "devices/" + c.Device + "/commands/" + id, payload
	}
	payload, _ := json.Marshal(struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}{c.Method, c.Params})
	return devices.TBRPCRequest + id, payload
}

func (d *downlink) inFlight(client string, id int64) bool {
	_, ok := d.sentOn.Load(sentKey{client, id})
	return ok
}

// done forgets a command packet that completed or was dropped. acked, if
// not nil, is called before the command stops counting as in flight on
// client (so that no send finds it neither in flight nor acknowledged).
func (d *downlink) done(client string, packet uint16, acked func(inflightCmd)) {
	v, ok := d.inflight.LoadAndDelete(inflightKey{client, packet})
	if !ok {
		return
	}
	c := v.(inflightCmd)
	if acked != nil {
		acked(c)
	}
	d.sentOn.Delete(sentKey{client, c.id})
}

// allowRead keeps a command publish from reaching any connection but the
// one it is for (OnACLCheck on delivery).
func (d *downlink) allowRead(cl *mqtt.Client, topic string) bool {
	s := d.sending.Load()
	return s == nil || s.topic != topic || s.cl == cl
}

// commandHook follows subscriptions to command topics and the QoS 1 flow
// of command packets.
type commandHook struct {
	mqtt.HookBase
	broker *Broker
}

func (h *commandHook) ID() string { return "telehub-commands" }

func (h *commandHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnSessionEstablished, mqtt.OnQosPublish, mqtt.OnQosDropped, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnSubscribe holds off targeted publishes (publishTo) until OnSubscribed:
// mochi checks a new filter with the same OnACLCheck as a delivery, so a
// connection subscribing to a shared topic (v1/devices/me/attributes)
// while the hub sends on it to another connection would be refused by
// allowRead. mochi calls OnSubscribe and OnSubscribed in pairs, on the
// subscribing connection's goroutine, with no return between them.
func (h *commandHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	h.broker.cmds.sendMu.Lock()
	return pk
}

// OnSubscribed tells the handler that a device listens once a connection
// subscribes to a filter that takes its commands (devices/X/commands/+, or
// #; for a device that authenticated, ThingsBoard's request topic) or its
// shared attributes (devices/X/attributes/desired; ThingsBoard's
// v1/devices/me/attributes). An anonymous client (loopback) stands for the
// device it subscribes for.
func (h *commandHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h.broker.cmds.sendMu.Unlock()
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] >= 0x80 {
			continue
		}
		h.subscribed(cl, f.Filter)
	}
}

// OnSessionEstablished: a resumed session keeps its subscriptions.
func (h *commandHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	for _, sub := range cl.State.Subscriptions.GetAll() {
		h.subscribed(cl, sub.Filter)
	}
}

func (h *commandHook) subscribed(cl *mqtt.Client, filter string) {
	b := h.broker
	st := b.conns.get(cl)
	if st == nil || b.Commands == nil {
		return
	}
	device, style := listenFilter(st.device, filter)
	if device == "" {
		return
	}
	fresh := b.cmds.listen(cl, st, device, style)
	if fresh&styleCommands != 0 {
		b.Commands.Listening(device)
	}
	if fresh&styleAttributes != 0 {
		b.Commands.AttributesListening(device)
	}
}

// listenFilter returns the device whose commands or shared attributes
// filter takes, and the styles, or "". self is the device the client
// authenticated as.
func listenFilter(self, filter string) (string, int) {
	if self != "" {
		style := 0
		if topicMatch(filter, devices.TBRPCRequest+"1") {
			style |= styleThingsBoard
		}
		if topicMatch(filter, devices.TBAttributes) {
			style |= styleAttrTB
		}
		if style != 0 {
			return self, style
		}
	}
	rest, ok := strings.CutPrefix(filter, "devices/")
	if !ok {
		return "", 0
	}
	device, tail, ok := strings.Cut(rest, "/")
	if !ok || devices.ValidateDeviceID(device) != nil || (self != "" && device != self) {
		return "", 0
	}
	style := 0
	if topicMatch(tail, "commands/1") {
		style |= styleTelehub
	}
	if topicMatch(tail, "attributes/desired") {
		style |= styleAttrTelehub
	}
	if style == 0 {
		return "", 0
	}
	return device, style
}

// topicMatch reports whether MQTT filter matches topic.
func topicMatch(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || (f != "+" && f != ts[i]) {
			return false
		}
	}
	return len(fs) == len(ts)
}

// OnQosPublish records which command a packet in flight carries.
func (h *commandHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	d := &h.broker.cmds
	if s := d.sending.Load(); s != nil && s.cl == cl && s.id != 0 && resends == 0 {
		device := deviceOfTopic(s.topic, h.broker.conns.device(cl))
		d.inflight.Store(inflightKey{cl.ID, pk.PacketID}, inflightCmd{device: device, id: s.id})
		d.sentOn.Store(sentKey{cl.ID, s.id}, struct{}{})
	}
}

// deviceOfTopic is the device a command topic names, else fallback.
func deviceOfTopic(topic, fallback string) string {
	if rest, ok := strings.CutPrefix(topic, "devices/"); ok {
		if device, _, ok := strings.Cut(rest, "/"); ok {
			return device
		}
	}
	return fallback
}

// OnQosDropped forgets a command packet mochi gave up on.
func (h *commandHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.broker.cmds.done(cl.ID, pk.PacketID, nil)
}

// OnDisconnect forgets the connection's listening.
func (h *commandHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if st := h.broker.conns.get(cl); st != nil {
		h.broker.cmds.forget(cl, st)
	}
	if expire { // the session is gone, and its packets in flight with it
		h.broker.cmds.inflight.Range(func(k, _ any) bool {
			if key := k.(inflightKey); key.client == cl.ID {
				h.broker.cmds.done(key.client, key.packet, nil)
			}
			return true
		})
	}
}

// puback handles a PUBACK read from cl (from OnPacketRead): one for a
// command packet tells the handler it was delivered.
func (b *Broker) puback(cl *mqtt.Client, packetID uint16) {
	if b.Commands == nil {
		b.cmds.done(cl.ID, packetID, nil)
		return
	}
	b.cmds.done(cl.ID, packetID, func(c inflightCmd) { b.Commands.Delivered(c.device, c.id) })
}
