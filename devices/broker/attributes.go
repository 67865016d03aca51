package broker

import (
	"encoding/json"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/telehub/telehub/devices"
)

// Attribute topics. Telehub's own: the hub publishes a device's shared
// attributes, all of them, on devices/X/attributes/desired; the device
// reports its client attributes on devices/X/attributes. ThingsBoard's,
// for a device that authenticated: v1/devices/me/attributes both ways (the
// hub publishes what changed, all of them when the device subscribes),
// and requests on v1/devices/me/attributes/request/N answered on
// .../response/N.
const (
	tbAttributes        = "v1/devices/me/attributes"
	tbAttributeRequest  = "v1/devices/me/attributes/request/"
	tbAttributeResponse = "v1/devices/me/attributes/response/"
)

// attributeTopic parses a publish about attributes: a report (request
// false) or a ThingsBoard request (n its number). self is the device the
// client authenticated as, "" for none.
func attributeTopic(self, topic string) (device string, request bool, n string, ok bool) {
	if self != "" {
		if topic == tbAttributes {
			return self, false, "", true
		}
		if n, found := strings.CutPrefix(topic, tbAttributeRequest); found && n != "" && !strings.Contains(n, "/") && len(n) <= 20 {
			return self, true, n, true
		}
	}
	rest, found := strings.CutPrefix(topic, "devices/")
	if !found {
		return "", false, "", false
	}
	device, tail, found := strings.Cut(rest, "/")
	if !found || tail != "attributes" || devices.ValidateDeviceID(device) != nil || (self != "" && device != self) {
		return "", false, "", false
	}
	return device, false, "", true
}

// SendAttributes implements devices.DeviceSender: full goes to connections
// that listen on Telehub's topic, delta (what changed; full when nil) to
// those on ThingsBoard's.
func (b *Broker) SendAttributes(device string, full, delta map[string]json.RawMessage) int {
	if b.server == nil {
		return 0
	}
	if delta == nil {
		delta = full
	}
	fullJSON, _ := json.Marshal(full)
	deltaJSON, _ := json.Marshal(delta)
	sent := 0
	for cl, styles := range b.cmds.of(device) {
		if cl.Closed() {
			continue
		}
		if styles&styleAttrTelehub != 0 && b.publishTo(cl, "devices/"+device+"/attributes/desired", fullJSON, 0) == nil {
			sent++
		}
		if styles&styleAttrTB != 0 && b.publishTo(cl, tbAttributes, deltaJSON, 0) == nil {
			sent++
		}
	}
	return sent
}

// attributeReply answers a ThingsBoard attribute request on the asking
// connection.
func (b *Broker) attributeReply(cl *mqtt.Client, n string) func([]byte) {
	return func(payload []byte) {
		if !cl.Closed() {
			b.publishTo(cl, tbAttributeResponse+n, payload, 0)
		}
	}
}
