package broker

import (
	"strings"
	"testing"

	"github.com/telehub/telehub/devices"
)

func TestCommandTopics(t *testing.T) {
	for _, tt := range []struct {
		self, filter string
		device       string
		style        int
	}{
		{"", "devices/pump/commands/+", "pump", styleTelehub},
		{"", "devices/pump/commands/#", "pump", styleTelehub},
		{"", "devices/pump/#", "pump", styleTelehub | styleAttrTelehub},
		{"", "devices/pump/attributes/desired", "pump", styleAttrTelehub},
		{"", "devices/pump/attributes", "", 0},
		{"pump", "v1/devices/me/attributes", "pump", styleAttrTB},
		{"pump", "v1/devices/me/#", "pump", styleThingsBoard | styleAttrTB},
		{"pump", "devices/pump/commands/+", "pump", styleTelehub},
		{"pump", "devices/other/commands/+", "", 0}, // not its own
		{"", "devices/+/commands/+", "", 0},         // no one device
		{"", "devices/pump/commands/+/response", "", 0},
		{"", "devices/pump/telemetry", "", 0},
		{"pump", "v1/devices/me/rpc/request/+", "pump", styleThingsBoard},
		{"", "v1/devices/me/rpc/request/+", "", 0}, // "me" needs a device
		{"", "#", "", 0},
		{"", "", "", 0},
		{"", "devices/bad id/commands/+", "", 0},
	} {
		device, style := listenFilter(tt.self, tt.filter)
		if device != tt.device || style != tt.style {
			t.Errorf("listenFilter(%q, %q) = %q %d, want %q %d", tt.self, tt.filter, device, style, tt.device, tt.style)
		}
	}
	for _, tt := range []struct {
		self, topic string
		device      string
		id          int64
		ok          bool
	}{
		{"", "devices/pump/commands/7/response", "pump", 7, true},
		{"pump", "devices/pump/commands/7/response", "pump", 7, true},
		{"other", "devices/pump/commands/7/response", "", 0, false}, // another device's
		{"pump", "v1/devices/me/rpc/response/9", "pump", 9, true},
		{"", "v1/devices/me/rpc/response/9", "", 0, false},
		{"", "devices/pump/commands/0/response", "", 0, false},
		{"", "devices/pump/commands/-1/response", "", 0, false},
		{"", "devices/pump/commands/99999999999999999999/response", "", 0, false},
		{"", "devices/pump/commands/7", "", 0, false},
		{"", "devices/pump/commands/x/response", "", 0, false},
		{"pump", "v1/devices/me/rpc/response/", "", 0, false},
	} {
		device, id, ok := devices.ParseCommandResponse(tt.self, tt.topic)
		if ok != tt.ok || ok && (device != tt.device || id != tt.id) {
			t.Errorf("devices.ParseCommandResponse(%q, %q) = %q %d %v, want %q %d %v", tt.self, tt.topic, device, id, ok, tt.device, tt.id, tt.ok)
		}
	}
}

// FuzzCommandTopics: no topic or filter a client sends crashes the parsers,
// and what they accept names a valid device and a positive id.
func FuzzCommandTopics(f *testing.F) {
	for _, s := range []string{"devices/a/commands/1/response", "v1/devices/me/rpc/response/5", "devices/a/commands/+", "#", "devices//commands/1/response", "devices/a/commands/٣/response"} {
		f.Add("a", s)
		f.Add("", s)
	}
	f.Fuzz(func(t *testing.T, self, topic string) {
		if devices.ValidateDeviceID(self) != nil {
			self = "" // the broker's self is always a valid id, or none
		}
		if device, id, ok := devices.ParseCommandResponse(self, topic); ok {
			if id <= 0 || device == "" || self != "" && device != self {
				t.Fatalf("devices.ParseCommandResponse(%q, %q) accepted %q %d", self, topic, device, id)
			}
		}
		if device, style := listenFilter(self, topic); device != "" {
			if style == 0 || self != "" && device != self || strings.ContainsAny(device, "/+#") {
				t.Fatalf("listenFilter(%q, %q) = %q %d", self, topic, device, style)
			}
		}
		topicMatch(topic, self)
	})
}
