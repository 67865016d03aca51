package broker

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// hook takes publishes from mochi in-process. mochi calls OnPublish on the
// client's read goroutine before it would write the PUBACK. The path of a
// publish, in this order:
//
//  1. '$' topics belong to the broker: refused (reservedTopic).
//  2. An authenticated device may publish only to its own topics (authHook.mayPublish).
//  3. Topics outside the device scheme are plain broker traffic: mochi
//     acknowledges and forwards them, after the client's pending device
//     acknowledgements (ackOrder.barrier).
//  4. Device topics: rate limit, size, the writer's metric limits; then
//     - QoS 0: queued without waiting (dropped and counted when the queue
//     is full) and forwarded to subscribers at once: best effort, as MQTT says.
//     - QoS 1: queued (waiting while the queue is full: back-pressure on that
//     connection only) and rejected towards mochi, which then sends nothing.
//     After commit the acker forwards the message to subscribers (and
//     retains it), then writes the PUBACK, in order. The read goroutine goes on reading, so one
//     connection can have many messages in flight.
//     - QoS 2: rare for telemetry; the hook waits for the commit, then lets
//     mochi run the PUBREC/PUBREL/PUBCOMP exchange and forward.
//
// Every refusal is counted, logged (throttled) and answered by the hub
// itself, in the client's acknowledgement order (refuseAck).
type hook struct {
	mqtt.HookBase
	broker   *Broker
	ctx      context.Context
	cancel   context.CancelFunc
	draining atomic.Bool
}

func (h *hook) ID() string { return "telehub-ingest" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublish, mqtt.OnWillSent, mqtt.OnPacketRead}, []byte{b})
}

// OnWillSent stores a device's last will (usually "offline" on its status
// topic). mochi publishes wills itself, past OnPublish, so without this a
// device that drops off would stay "online" in the store.
func (h *hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	b := h.broker
	device, kind, ours, err := b.Scheme.ParseTopic(pk.TopicName)
	if !ours || err != nil || len(pk.Payload) > b.MaxPayload {
		return
	}
	b.Stats.Received()
	now := time.Now().UnixMilli()
	ts, values, flags := devices.DecodePayload(pk.Payload, now)
	p := &devices.Pending{Message: devices.Message{
		Device: device, Topic: pk.TopicName, Kind: kind, TS: ts, Received: now,
		QoS: pk.FixedHeader.Qos, Flags: flags, Payload: pk.Payload, Values: values,
	}}
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	if err := b.Writer.Write(ctx, p); err != nil {
		reason := devices.RefusalReason(err)
		b.Stats.Rejected(reason)
		b.logOnce(string(reason)+"|will|"+device, "last will not stored", "reason", string(reason), "device", device, "error", err)
	}
}

// OnPacketRead answers publishes to $SYS topics, which mochi drops before
// OnPublish without a word (other '$' topics reach OnPublish).
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Puback && !cl.Net.Inline {
		h.broker.puback(cl, pk.PacketID) // perhaps a command's delivery
		return pk, nil
	}
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline || !isSysTopic(pk.TopicName) {
		return pk, nil
	}
	h.reservedTopic(cl, pk)
	return pk, nil // mochi drops it: not a valid publish topic
}

// isSysTopic matches mochi's own test (case-insensitive $SYS prefix).
func isSysTopic(topic string) bool {
	return len(topic) >= 4 && strings.EqualFold(topic[:4], "$SYS")
}

// reservedTopic refuses a publish to a topic starting with '$', reserved for
// the broker [MQTT-4.7.2-1]: MQTT 5 clients get PUBACK/PUBREC "not
// authorised" (0x87), MQTT 3.1.1 clients a plain acknowledgement
// ([MQTT-3.3.5-2]); it is neither stored, forwarded nor retained.
func (h *hook) reservedTopic(cl *mqtt.Client, pk packets.Packet) error {
	b := h.broker
	b.Stats.Received()
	b.Stats.Rejected(devices.ReasonReservedTopic)
	b.logOnce("reserved|"+cl.ID, "publish refused: reserved topic", "client", cl.ID, "topic", logTopic(pk.TopicName))
	return h.refuseAck(cl, pk, packets.ErrNotAuthorized, "topics starting with $ are reserved")
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		if f := h.broker.acks.forwarding.Load(); f != nil && f.TopicName == pk.TopicName {
			return *f, nil // a committed message being forwarded by the acker
		}
		return pk, nil
	}
	b := h.broker
	if strings.HasPrefix(pk.TopicName, "$") {
		return pk, h.reservedTopic(cl, pk)
	}
	st := b.conns.get(cl)
	self := ""
	if st != nil {
		self = st.device // "" for an anonymous client
	}
	if device, id, ok := devices.ParseCommandResponse(self, pk.TopicName); ok {
		// A device's answer to a command: recorded, then handled as plain
		// broker traffic (acknowledged in order, forwarded to subscribers),
		// but on ThingsBoard's topics, shared by every device as "me",
		// never forwarded.
		if b.Commands != nil {
			b.Commands.Replied(device, id, pk.Payload)
		}
		return h.consumed(cl, pk, st)
	}
	if device, request, n, ok := devices.ParseAttributeTopic(self, pk.TopicName); ok {
		if b.Commands != nil {
			if request {
				b.Commands.AttributesRequested(device, pk.Payload, b.attributeReply(cl, n))
			} else {
				b.Commands.Reported(device, pk.Payload)
			}
		}
		return h.consumed(cl, pk, st)
	}
	if self != "" && !b.auth.mayPublish(self, pk.TopicName) {
		b.Stats.Received()
		b.Stats.Denied(self)
		b.logOnce(string(devices.ReasonNotAuthorized)+"|"+self, "publish refused: not the device's topic", "device", self, "topic", logTopic(pk.TopicName))
		if cl.Properties.ProtocolVersion < 5 {
			// MQTT 3.1.1 cannot say "no"; closing the connection tells the
			// device more than a silent positive acknowledgement would.
			cl.Stop(packets.ErrNotAuthorized)
			return pk, packets.ErrRejectPacket
		}
		return pk, h.refuseAck(cl, pk, packets.ErrNotAuthorized, "not the device's topic")
	}
	var device string
	var kind devices.Kind
	var ours bool
	var err error
	if pk.TopicName == meTelemetryTopic {
		device, kind, ours = self, devices.KindTelemetry, true
	} else {
		device, kind, ours, err = b.Scheme.ParseTopic(pk.TopicName)
	}
	if !ours {
		// Plain broker traffic, not stored: mochi acknowledges it once the
		// client's earlier device publishes are [MQTT-4.6.0-2].
		if pk.FixedHeader.Qos > 0 && st != nil {
			h.waitAcks(st)
		}
		return pk, nil
	}
	b.Stats.Received()
	if err != nil {
		return pk, h.refuse(cl, pk, device, devices.ReasonInvalidTopic, packets.ErrTopicNameInvalid, "invalid device id in the topic")
	}
	if device == "" { // the "me" topic from a client that did not authenticate
		b.Stats.Denied(self)
		return pk, h.refuse(cl, pk, device, "", packets.ErrNotAuthorized, "publish to "+pk.TopicName+" needs the device's credentials")
	}
	if self == "" && kind == devices.KindTelemetry {
		// An anonymous client's connection stands for the devices it sends
		// telemetry for. One that publishes a device's status says so
		// itself (a one-shot "online" must not turn offline when the
		// publisher disconnects a moment later).
		b.session.published(cl, device)
	}
	if !b.limiter.allow(device, time.Now()) {
		if cl.Properties.ProtocolVersion < 5 {
			// A passing condition: not acknowledged, so that the device
			// sends it again, rather than acknowledged and lost.
			b.Stats.Rejected(devices.ReasonRateLimited)
			b.logOnce(string(devices.ReasonRateLimited)+"|"+device, "publish not stored: device over its message rate; not acknowledged", "device", device)
			return pk, packets.ErrRejectPacket
		}
		return pk, h.refuse(cl, pk, device, devices.ReasonRateLimited, packets.ErrMessageRateTooHigh, "device over its message rate")
	}
	if len(pk.Payload) > b.MaxPayload {
		return pk, h.refuse(cl, pk, device, devices.ReasonTooLarge, packets.ErrQuotaExceeded, "payload exceeds the size limit")
	}
	if h.draining.Load() {
		b.Stats.Rejected(devices.ReasonShuttingDown)
		if pk.FixedHeader.Qos == 0 {
			return pk, nil
		}
		return pk, packets.ErrRejectPacket // not acknowledged: the device resends
	}

	now := time.Now().UnixMilli()
	ts, values, flags := devices.DecodePayload(pk.Payload, now)
	p := &devices.Pending{Message: devices.Message{
		Device:   device,
		Topic:    pk.TopicName,
		Kind:     kind,
		TS:       ts,
		Received: now,
		QoS:      pk.FixedHeader.Qos,
		Flags:    flags,
		Payload:  pk.Payload,
		Values:   values,
	}}

	switch pk.FixedHeader.Qos {
	case 0:
		if err := b.Writer.TryWrite(p); err != nil {
			reason := devices.RefusalReason(err)
			b.Stats.Rejected(reason)
			b.logOnce(string(reason)+"|"+device, "publish not stored", "reason", string(reason), "device", device, "error", err)
		}
		return pk, nil

	case 1:
		if st == nil {
			return pk, packets.ErrRejectPacket // not registered: it is closing
		}
		if cl.Properties.ProtocolVersion == 5 && st.acks.unwritten() >= int(b.server.Options.Capabilities.ReceiveMaximum) {
			// More unacknowledged QoS 1 publishes than the CONNACK's Receive
			// Maximum allows [MQTT-3.3.4-7]: mochi counts only those it
			// acknowledges itself, so the hub counts its own.
			b.server.DisconnectClient(cl, packets.ErrReceiveMaximum)
			return pk, packets.ErrRejectPacket
		}
		pa := st.acks.track()
		p.Done = func(m *devices.Message, err error) {
			h.broker.acks.add(ackItem{cl: cl, pk: pk, order: &st.acks, pa: pa, ack: err == nil})
		}
		if err := b.Writer.Write(h.ctx, p); err != nil {
			st.acks.untrack(pa)
			return pk, h.refuseWrite(cl, pk, device, err)
		}
		return pk, packets.ErrRejectPacket

	default:
		if st != nil {
			h.waitAcks(st) // mochi writes the PUBREC
		}
		done := make(chan error, 1)
		p.Done = func(m *devices.Message, err error) { done <- err }
		if err := b.Writer.Write(h.ctx, p); err != nil {
			return pk, h.refuseWrite(cl, pk, device, err)
		}
		select {
		case err := <-done:
			if err != nil {
				return pk, packets.ErrRejectPacket
			}
			return pk, nil
		case <-h.ctx.Done():
			return pk, packets.ErrRejectPacket
		}
	}
}

// waitAcks waits until the PUBACKs of the client's earlier device publishes
// are written, so that an acknowledgement mochi writes next does not
// overtake them. The write deadline bounds the wait.
func (h *hook) waitAcks(st *connState) {
	ch := st.acks.barrier()
	if ch == nil {
		return
	}
	t := time.NewTimer(2 * h.broker.WriteTimeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-h.ctx.Done():
	}
}

// consumed finishes a publish the hub took for itself (a command's answer,
// attributes): on the device's own topics as plain traffic, acknowledged in
// order and forwarded; on ThingsBoard's "me" topics acknowledged and
// dropped, since every ThingsBoard device listens on the same topic.
func (h *hook) consumed(cl *mqtt.Client, pk packets.Packet, st *connState) (packets.Packet, error) {
	if strings.HasPrefix(pk.TopicName, "v1/devices/me/") {
		return pk, h.refuseAck(cl, pk, packets.CodeSuccess, "")
	}
	if pk.FixedHeader.Qos > 0 && st != nil {
		h.waitAcks(st)
	}
	return pk, nil
}

// refuseWrite answers a publish the writer would not queue. A message over
// the store's metric limits is refused like any other (0x97 or 0x99 on MQTT
// 5); when the writer is closing, the publish is not acknowledged, so that
// the device sends it again to the next hub.
func (h *hook) refuseWrite(cl *mqtt.Client, pk packets.Packet, device string, err error) error {
	reason := devices.RefusalReason(err)
	switch reason {
	case devices.ReasonTooManyMetrics:
		return h.refuse(cl, pk, device, reason, packets.ErrQuotaExceeded, err.Error())
	case devices.ReasonMetricName:
		return h.refuse(cl, pk, device, reason, packets.ErrPayloadFormatInvalid, err.Error())
	}
	h.broker.Stats.Rejected(reason)
	return packets.ErrRejectPacket
}

// refuse counts and logs a refused publish and answers it (refuseAck).
// reason "" means the caller counted the refusal already.
func (h *hook) refuse(cl *mqtt.Client, pk packets.Packet, device string, reason devices.Reason, code packets.Code, detail string) error {
	if reason != "" {
		h.broker.Stats.Rejected(reason)
	} else {
		reason = devices.ReasonNotAuthorized
	}
	h.broker.logOnce(string(reason)+"|"+device, "publish not stored", "reason", string(reason), "device", logTopic(device), "topic", logTopic(pk.TopicName), "detail", detail)
	return h.refuseAck(cl, pk, code, detail)
}

// refuseAck answers a refused publish itself and tells mochi to drop it, so
// that it is neither acknowledged twice, forwarded nor retained. MQTT 5
// clients get a PUBACK (PUBREC for QoS 2) with the reason code; MQTT 3.1.1
// has no negative acknowledgement, so the publish is acknowledged and
// discarded, the choice [MQTT-3.3.5-2] allows, rather than closing the
// connection and making the device resend the same message forever. When
// earlier QoS 1 publishes of the client still wait for their PUBACK, the
// answer waits behind them, keeping the order [MQTT-4.6.0-2].
func (h *hook) refuseAck(cl *mqtt.Client, pk packets.Packet, code packets.Code, detail string) error {
	if pk.FixedHeader.Qos == 0 {
		return packets.ErrRejectPacket
	}
	ack := refusalAck(cl, pk, code, detail)
	if st := h.broker.conns.get(cl); st == nil || !st.acks.deferAck(ack) {
		if b := encodeAck(cl, ack); b != nil {
			cl.Lock() // the client's own goroutine: waiting on its lock stalls only it
			_, err := cl.Net.Conn.Write(b)
			cl.Unlock()
			if err != nil {
				cl.Stop(err)
			}
		}
	}
	return packets.ErrRejectPacket
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

// maxLogTopic is the most of a topic a log line shows.
const maxLogTopic = 128

// logTopic shortens a topic for the log: topics may be 64 KiB long.
func logTopic(t string) string {
	if len(t) <= maxLogTopic {
		return t
	}
	return t[:maxLogTopic] + "..."
}
