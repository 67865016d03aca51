package devices_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/telehub/telehub/devices"
)

func TestScheme_ParseTopic(t *testing.T) {
	s := devices.DefaultScheme()
	for _, tt := range []struct {
		name    string
		topic   string
		device  string
		kind    devices.Kind
		ours    bool
		invalid bool
	}{
		{name: "telemetry", topic: "devices/kitchen/telemetry", device: "kitchen", kind: devices.KindTelemetry, ours: true},
		{name: "status", topic: "devices/kitchen/status", device: "kitchen", kind: devices.KindStatus, ours: true},
		{name: "mac id", topic: "devices/aa:bb:cc:dd/telemetry", device: "aa:bb:cc:dd", kind: devices.KindTelemetry, ours: true},
		{name: "other suffix", topic: "devices/kitchen/commands", ours: false},
		{name: "extra level", topic: "devices/kitchen/telemetry/x", ours: false},
		{name: "short", topic: "devices/kitchen", ours: false},
		{name: "other root", topic: "home/kitchen/telemetry", ours: false},
		{name: "empty id", topic: "devices//telemetry", ours: true, invalid: true},
		{name: "space in id", topic: "devices/bad id/telemetry", ours: true, invalid: true},
		{name: "long id", topic: "devices/" + strings.Repeat("a", 129) + "/telemetry", ours: true, invalid: true},
		{name: "empty", topic: "", ours: false},
		{name: "sys", topic: "$SYS/broker/uptime", ours: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, k, ours, err := s.ParseTopic(tt.topic)
			if ours != tt.ours {
				t.Fatalf("ours=%v, want %v", ours, tt.ours)
			}
			if tt.invalid {
				if !errors.Is(err, devices.ErrInvalid) {
					t.Fatalf("err=%v, want ErrInvalid", err)
				}
				return
			}
			if err != nil || d != tt.device || k != tt.kind {
				t.Fatalf("ParseTopic=%q,%v,%v, want %q,%v", d, k, err, tt.device, tt.kind)
			}
		})
	}
}

func TestNewScheme(t *testing.T) {
	s, err := devices.NewScheme("site/{device}/up", "")
	if err != nil {
		t.Fatal(err)
	}
	if d, _, ok, err := s.ParseTopic("site/pump-3/up"); !ok || err != nil || d != "pump-3" {
		t.Errorf("ParseTopic=%q,%v,%v, want pump-3", d, ok, err)
	}
	if got := s.Filters(); len(got) != 1 || got[0] != "site/+/up" {
		t.Errorf("Filters=%v, want [site/+/up]", got)
	}
	if got := s.Topic("x", devices.KindTelemetry); got != "site/x/up" {
		t.Errorf("Topic=%q, want site/x/up", got)
	}
	for _, bad := range []string{"", "devices/+/t", "a/{device}/{device}", "a//{device}", "no/device", "a/#/{device}"} {
		if _, err := devices.NewScheme(bad, ""); !errors.Is(err, devices.ErrInvalid) {
			t.Errorf("NewScheme(%q) err=%v, want ErrInvalid", bad, err)
		}
	}
}

// FuzzParseTopic: no panic; a topic accepted as ours has a valid device id
// and round-trips through Topic.
func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"devices/kitchen/telemetry", "devices/x/status", "devices//telemetry", "a/b/c", "", "/", "devices/a/b/telemetry", "devices/\x00/telemetry"} {
		f.Add(s)
	}
	s := devices.DefaultScheme()
	f.Fuzz(func(t *testing.T, topic string) {
		d, k, ours, err := s.ParseTopic(topic)
		if !ours || err != nil {
			return
		}
		if verr := devices.ValidateDeviceID(d); verr != nil {
			t.Fatalf("accepted invalid id %q: %v", d, verr)
		}
		if got := s.Topic(d, k); got != topic {
			t.Fatalf("Topic(%q)=%q, want %q", d, got, topic)
		}
	})
}
