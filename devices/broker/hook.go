package broker

import (
	"bytes"
	"context"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// hook takes publishes from mochi in-process. mochi calls OnPublish on the
// client's read goroutine before it would write the PUBACK, so:
//
//   - QoS 0: queued without waiting (dropped and counted when the queue is
//     full) and forwarded to subscribers at once: best effort, as MQTT says.
//   - QoS 1: queued (waiting while the queue is full: back-pressure on that
//     connection only) and rejected towards mochi, which then sends nothing.
//     After commit the acker writes the PUBACK, in order, and forwards the
//     message to subscribers. The read goroutine goes on reading, so one
//     connection can have many messages in flight.
//   - QoS 2: rare for telemetry; the hook waits for the commit, then lets
//     mochi run the PUBREC/PUBREL/PUBCOMP exchange and forward.
type hook struct {
	mqtt.HookBase
	broker   *Broker
	ctx      context.Context
	cancel   context.CancelFunc
	draining atomic.Bool
	throttle devices.Throttle
}

func (h *hook) ID() string { return "telehub-ingest" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublish, mqtt.OnWillSent}, []byte{b})
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
		b.Stats.Rejected(devices.ReasonShuttingDown)
		h.logRefusal(device+"|"+pk.TopicName, devices.ReasonShuttingDown, "last will not stored: "+err.Error())
	}
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // a committed message being forwarded by ack
	}
	b := h.broker
	self := b.auth.device(cl) // "" for an anonymous client
	if self != "" && !b.auth.mayPublish(self, pk.TopicName) {
		b.Stats.Received()
		b.Stats.Denied(self)
		h.logRefusal(self+"|"+pk.TopicName, devices.ReasonNotAuthorized, "not the device's topic")
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
		return pk, nil // not a device topic: plain broker traffic, not stored
	}
	b.Stats.Received()
	if err != nil {
		return pk, h.refuse(cl, pk, device, devices.ReasonInvalidTopic, packets.ErrTopicNameInvalid, err.Error())
	}
	if device == "" { // the "me" topic from a client that did not authenticate
		b.Stats.Denied(self)
		return pk, h.refuse(cl, pk, device, "", packets.ErrNotAuthorized, "publish to "+pk.TopicName+" needs the device's credentials")
	}
	if self == "" {
		b.auth.published(cl, device)
	}
	if !b.auth.limiter.allow(device, time.Now()) {
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
			h.logRefusal(device, reason, err.Error())
		}
		return pk, nil

	case 1:
		pa := b.auth.track(cl)
		p.Done = func(m *devices.Message, err error) {
			after := h.broker.auth.settle(cl, pa)
			if err == nil {
				h.broker.acks.add(cl, pk, after)
			}
		}
		if err := b.Writer.Write(h.ctx, p); err != nil {
			for _, ack := range b.auth.untrack(cl, pa) {
				cl.WritePacket(ack)
			}
			return pk, h.refuseWrite(cl, pk, device, err)
		}
		return pk, packets.ErrRejectPacket

	default:
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
	h.logRefusal(device+"|"+pk.TopicName, reason, detail)
	return h.refuseAck(cl, pk, code, detail)
}

// refuseAck answers a refused publish and returns what mochi should do with
// it. MQTT 5 clients get a PUBACK (PUBREC) with the reason code; MQTT 3.1.1
// has no negative acknowledgement, so the publish is acknowledged and
// discarded, the choice [MQTT-3.3.5-2] allows, rather than closing the
// connection and making the device resend the same message forever. When
// earlier QoS 1 publishes of the client still wait for their commit, the
// answer waits behind their PUBACKs, keeping the order [MQTT-4.6.0-2].
func (h *hook) refuseAck(cl *mqtt.Client, pk packets.Packet, code packets.Code, detail string) error {
	if pk.FixedHeader.Qos == 0 {
		return packets.CodeSuccessIgnore
	}
	if h.broker.auth.deferAck(cl, refusalAck(cl, pk, code, detail)) {
		return packets.ErrRejectPacket // sent later, by the acker
	}
	if cl.Properties.ProtocolVersion == 5 {
		return packets.Code{Code: code.Code, Reason: detail}
	}
	return packets.CodeSuccessIgnore
}

func (h *hook) logRefusal(key string, reason devices.Reason, detail string) {
	if ok, suppressed := h.throttle.Allow(string(reason)+"|"+key, time.Now()); ok {
		h.broker.Logger.Warn("publish not stored", "reason", string(reason), "key", key, "detail", detail, "suppressed_since_last", suppressed)
	}
}
