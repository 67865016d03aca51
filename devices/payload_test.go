package devices_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
)

const recv = int64(1800000000000)

func TestDecodePayload(t *testing.T) {
	for _, tt := range []struct {
		name   string
		in     string
		ts     int64
		values map[string]string
		flags  devices.Flags
	}{
		{name: "metrics", in: `{"temp":21.5,"hum":40}`, ts: recv, values: map[string]string{"temp": "21.5", "hum": "40"}},
		{name: "ts ms", in: `{"temp":1,"ts":1700000000000}`, ts: 1700000000000, values: map[string]string{"temp": "1"}},
		{name: "ts float", in: `{"temp":1,"ts":1700000000000.7}`, ts: 1700000000000, values: map[string]string{"temp": "1"}},
		{name: "ts rfc3339", in: `{"temp":1,"ts":"2023-11-14T22:13:20.5Z"}`, ts: 1700000000500, values: map[string]string{"temp": "1"}},
		{name: "ts bad", in: `{"temp":1,"ts":"yesterday"}`, ts: recv, values: map[string]string{"temp": "1"}, flags: devices.FlagBadTS},
		{name: "ts huge", in: `{"temp":1,"ts":1e300}`, ts: recv, values: map[string]string{"temp": "1"}, flags: devices.FlagBadTS},
		{name: "ts past the year 10000", in: `{"temp":1,"ts":9223372036854775807}`, ts: recv, values: map[string]string{"temp": "1"}, flags: devices.FlagBadTS},
		{name: "ts before the year -10000", in: `{"temp":1,"ts":-400000000000000}`, ts: recv, values: map[string]string{"temp": "1"}, flags: devices.FlagBadTS},
		{name: "thingsboard", in: `{"ts":1700000000000,"values":{"temp":21.5,"on":true}}`, ts: 1700000000000, values: map[string]string{"temp": "21.5", "on": "true"}},
		{name: "thingsboard no ts", in: `{"values":{"temp":2}}`, ts: recv, values: map[string]string{"temp": "2"}},
		{name: "values with other keys is plain", in: `{"values":{"a":1},"b":2}`, ts: recv, values: map[string]string{"values": `{"a":1}`, "b": "2"}},
		{name: "thingsboard array", in: `[{"ts":1000,"values":{"a":1}},{"ts":3000,"values":{"b":2}}]`, ts: 3000, values: map[string]string{"a": "1", "b": "2"}},
		{name: "array of non-tb", in: `[{"a":1}]`, ts: recv, flags: devices.FlagNotObject},
		{name: "number", in: `42`, ts: recv, flags: devices.FlagNotObject},
		{name: "string", in: `"on"`, ts: recv, flags: devices.FlagNotObject},
		{name: "empty array", in: `[]`, ts: recv, flags: devices.FlagNotObject},
		{name: "text", in: `hello`, ts: recv, flags: devices.FlagNotJSON},
		{name: "truncated", in: `{"temp":`, ts: recv, flags: devices.FlagNotJSON},
		{name: "bad utf8", in: "{\"s\":\"\xc3\x28\"}", ts: recv, flags: devices.FlagNotJSON},
		{name: "empty", in: ``, ts: recv, flags: devices.FlagEmpty},
		{name: "whitespace object", in: " \n{\"a\":1} ", ts: recv, values: map[string]string{"a": "1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts, values, flags := devices.DecodePayload([]byte(tt.in), recv)
			if ts != tt.ts {
				t.Errorf("ts=%v, want %v", ts, tt.ts)
			}
			if flags != tt.flags {
				t.Errorf("flags=%v, want %v", flags.Names(), tt.flags.Names())
			}
			got := map[string]string{}
			for _, v := range values {
				got[v.Name] = string(v.Value)
			}
			if tt.values == nil {
				tt.values = map[string]string{}
			}
			if !reflect.DeepEqual(got, tt.values) {
				t.Errorf("values=%v, want %v", got, tt.values)
			}
		})
	}
}

// TestDecodePayload_Testdata checks the fixture files: valid ones decode with
// metrics and no flags, invalid ones are flagged, and none is lost.
func TestDecodePayload_Testdata(t *testing.T) {
	for _, dir := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join("testdata", "payloads", dir, "*.json"))
		if len(files) == 0 {
			t.Fatalf("no fixtures in %s", dir)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, values, flags := devices.DecodePayload(b, recv)
			if dir == "valid" && (flags != 0 || len(values) == 0) {
				t.Errorf("%s: flags=%v values=%d, want no flags and some values", f, flags.Names(), len(values))
			}
			if dir == "invalid" && flags == 0 {
				t.Errorf("%s: no flag, want one", f)
			}
		}
	}
}

func TestMessage_AppendJSON(t *testing.T) {
	for _, m := range []devices.Message{
		{Seq: 7, Device: "kitchen", Topic: "devices/kitchen/telemetry", TS: 1, Received: 2, QoS: 1, Payload: []byte(`{"temp":21.5}`)},
		{Seq: 8, Device: "a\"b", Topic: "t/\u00e9", Flags: devices.FlagNotJSON, Payload: []byte{0xff, 0, 1}},
		{Seq: 9, Device: "e", Flags: devices.FlagEmpty},
		{Seq: 10, Device: "s", Topic: "devices/s/status", Kind: devices.KindStatus, Payload: []byte(`"online"`)},
	} {
		b := m.AppendJSON(nil)
		var got struct {
			Seq      int64           `json:"seq"`
			Device   string          `json:"device"`
			Topic    string          `json:"topic"`
			Encoding string          `json:"encoding"`
			Payload  json.RawMessage `json:"payload"`
			Flags    []string        `json:"flags"`
			Kind     string          `json:"kind"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("AppendJSON produced invalid JSON %s: %v", b, err)
		}
		if wantKind := map[bool]string{true: "status"}[m.Kind == devices.KindStatus]; got.Kind != wantKind {
			t.Errorf("kind=%q, want %q", got.Kind, wantKind)
		}
		if got.Seq != int64(m.Seq) || got.Device != m.Device || got.Topic != m.Topic {
			t.Errorf("decoded %+v, want seq %d device %q topic %q", got, m.Seq, m.Device, m.Topic)
		}
		if m.IsJSON() {
			if got.Encoding != "json" || string(got.Payload) != string(m.Payload) {
				t.Errorf("payload=%s encoding=%s, want %s as json", got.Payload, got.Encoding, m.Payload)
			}
		} else if m.IsText() {
			var s string
			if json.Unmarshal(got.Payload, &s) != nil || s != string(m.Payload) || got.Encoding != "text" || len(got.Flags) == 0 {
				t.Errorf("payload=%s encoding=%s flags=%v, want %q as text with flags", got.Payload, got.Encoding, got.Flags, m.Payload)
			}
		} else {
			if got.Encoding != "base64" || len(got.Flags) == 0 {
				t.Errorf("encoding=%s flags=%v, want base64 with flags", got.Encoding, got.Flags)
			}
		}
	}
}

// FuzzDecodePayload: no panic; the message timestamp is the receive time
// unless a valid ts was read; JSON output of the message is always valid.
func FuzzDecodePayload(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join("testdata", "payloads", dir, "*.json"))
		for _, file := range files {
			b, _ := os.ReadFile(file)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		ts, values, flags := devices.DecodePayload(payload, recv)
		if flags&(devices.FlagNotJSON|devices.FlagEmpty|devices.FlagNotObject) != 0 && len(values) > 0 {
			t.Fatalf("flags %v but %d values", flags.Names(), len(values))
		}
		if flags&devices.FlagNotJSON == 0 && flags&devices.FlagEmpty == 0 && !json.Valid(payload) {
			t.Fatalf("served as JSON but invalid: %q", payload)
		}
		for _, v := range values {
			if !json.Valid(v.Value) {
				t.Fatalf("value %q of %q is not JSON", v.Value, v.Name)
			}
		}
		m := devices.Message{Seq: 1, Device: "d", Topic: "t", TS: ts, Received: recv, Flags: flags, Payload: payload}
		if out := m.AppendJSON(nil); !json.Valid(out) {
			t.Fatalf("AppendJSON gave invalid JSON for %q: %s", payload, out)
		}
	})
}

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "30d": 30 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "36h": 36 * time.Hour, "1.5d": 36 * time.Hour} {
		if got, err := devices.ParseRetention(in); err != nil || got != want {
			t.Errorf("%q: %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1d", "-5h", "30", "d"} {
		if _, err := devices.ParseRetention(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// FuzzParseRetention: no panic; an accepted value is never negative.
func FuzzParseRetention(f *testing.F) {
	for _, s := range []string{"0", "30d", "2w", "36h", "1.5d", "-1d", "1e400d", "NaNd", "9999999999999999999h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := devices.ParseRetention(s)
		if err == nil && d < 0 {
			t.Fatalf("%q: negative %v accepted", s, d)
		}
	})
}
