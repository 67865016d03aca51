package devices

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Seq is a message's sequence number: its row id in the store, assigned at
// commit, strictly increasing and never reused. Live push, replay and export
// cursors all speak in sequence numbers.
type Seq int64

// Kind tells what a topic carries.
type Kind uint8

// The kinds of topic in the scheme.
const (
	// KindTelemetry is a device's data topic (devices/{id}/telemetry).
	KindTelemetry Kind = iota + 1
	// KindStatus is a device's online/offline topic (devices/{id}/status).
	KindStatus
	// KindCommand marks a command's change on the live feed
	// (Command.FeedMessage), KindAttributes an attribute change
	// (AttributeEvent.FeedMessage), KindAlert an alert's change
	// (Alert.FeedMessage); no topic of the scheme has them.
	KindCommand
	KindAttributes
	KindAlert
)

// Flags record what the decoder noticed about a payload. They are stored with
// the message so that nothing is silently reinterpreted.
type Flags uint16

const (
	// FlagNotJSON marks a payload that is not valid UTF-8 JSON; it is stored
	// raw and served as text when it is printable UTF-8 (IsText), otherwise
	// base64-encoded.
	FlagNotJSON Flags = 1 << iota
	// FlagNotObject marks JSON that is neither an object of metrics nor a
	// ThingsBoard array; it is stored as published without metrics.
	FlagNotObject
	// FlagBadTS marks a payload whose "ts" could not be read; the receive
	// time stands in for it.
	FlagBadTS
	// FlagEmpty marks an empty payload.
	FlagEmpty
)

var flagNames = []string{"not_json", "not_object", "bad_ts", "empty"}

// Names returns the flag names in bit order, for JSON and logs.
func (f Flags) Names() []string {
	var out []string
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// Message is one stored MQTT publish.
type Message struct {
	// Seq is assigned by the store when the message is committed; zero before.
	Seq Seq
	// Device is the device id taken from the topic.
	Device string
	// Topic is the MQTT topic as published.
	Topic string
	// Kind is what the topic carries.
	Kind Kind
	// TS is the device's timestamp (payload "ts"), or Received when absent, Unix ms.
	TS int64
	// Received is when the hub took the message, Unix ms.
	Received int64
	// QoS is the publish's quality of service level.
	QoS byte
	// Flags are what the decoder noticed.
	Flags Flags
	// Payload is the payload exactly as published.
	Payload []byte
	// Values are the decoded metrics (nil when none). They feed the device's
	// latest values and are not stored separately.
	Values []Value
}

// Value is one decoded metric reading.
type Value struct {
	// Name is the metric's key in the payload.
	Name string
	// Value is the JSON value as published.
	Value json.RawMessage
	// TS is the reading's timestamp, Unix ms.
	TS int64
}

// IsJSON reports whether the payload is served as JSON (not base64).
func (m *Message) IsJSON() bool { return m.Flags&(FlagNotJSON|FlagEmpty) == 0 }

// IsText reports whether a payload that is not JSON is printable UTF-8 text
// (a plain "online", a CSV line), served as a string with "encoding":"text".
func (m *Message) IsText() bool { return !m.IsJSON() && IsText(m.Payload) }

// IsText reports whether p is valid UTF-8 without control characters other
// than tab, newline and carriage return.
func IsText(p []byte) bool {
	if !utf8.Valid(p) {
		return false
	}
	for _, c := range p {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' || c == 0x7f {
			return false
		}
	}
	return true
}

// AppendJSON appends m as a JSON object to b. The payload appears as the JSON
// value that was published; a payload that is not JSON as a string with
// "encoding":"text" when it is printable UTF-8 (IsText), otherwise as base64
// with "encoding":"base64". It is hand-written because it is on the hot path
// of the WebSocket push, replay and export.
func (m *Message) AppendJSON(b []byte) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(m.Seq), 10)
	b = append(b, `,"device":`...)
	b = appendString(b, m.Device)
	b = append(b, `,"topic":`...)
	b = appendString(b, m.Topic)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, m.TS, 10)
	b = append(b, `,"received":`...)
	b = strconv.AppendInt(b, m.Received, 10)
	b = append(b, `,"qos":`...)
	b = strconv.AppendInt(b, int64(m.QoS), 10)
	if m.Kind == KindStatus {
		b = append(b, `,"kind":"status"`...)
	}
	if m.IsJSON() {
		b = append(b, `,"encoding":"json","payload":`...)
		b = append(b, m.Payload...)
	} else if m.IsText() {
		b = append(b, `,"encoding":"text","payload":`...)
		b = appendString(b, string(m.Payload))
	} else {
		b = append(b, `,"encoding":"base64","payload":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.Payload)
		b = append(b, '"')
	}
	if m.Flags != 0 {
		b = append(b, `,"flags":[`...)
		for i, n := range m.Flags.Names() {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, n)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// MarshalJSON implements json.Marshaler with AppendJSON.
func (m Message) MarshalJSON() ([]byte, error) { return m.AppendJSON(nil), nil }

// appendString appends s as a JSON string. Device ids and topics are short
// and mostly plain ASCII, so the common case is a copy.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
