package broker

import (
	"encoding/json"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/telehub/telehub/devices"
)

// Attribute topics (parsed by devices.ParseAttributeTopic). Telehub's own:
// the hub publishes a device's shared attributes, all of them, on
// devices/X/attributes/desired; the device reports its client attributes
// on devices/X/attributes. ThingsBoard's, for a device that authenticated:
// v1/devices/me/attributes both ways (the hub publishes what changed, all
// of them when the device subscribes), and requests on
// v1/devices/me/attributes/request/N answered on .../response/N.

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
		if styles&styleAttrTB != 0 && b.publishTo(cl, devices.TBAttributes, deltaJSON, 0) == nil {
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
			b.publishTo(cl, devices.TBAttributeResponse+n, payload, 0)
		}
	}
}
