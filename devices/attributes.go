package devices

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// AttributeScope says who sets an attribute.
type AttributeScope string

// Shared attributes are what the server wants of a device (a set point);
// client attributes are what the device reports (its firmware version).
const (
	AttrShared AttributeScope = "shared"
	AttrClient AttributeScope = "client"
)

// Attribute is one key's value, with the time it was last set (Unix ms).
type Attribute struct {
	Value json.RawMessage `json:"value"`
	TS    int64           `json:"ts"`
}

// Attributes are a device's twin: both scopes, key by key.
type Attributes struct {
	Device string               `json:"device"`
	Shared map[string]Attribute `json:"shared"`
	Client map[string]Attribute `json:"client"`
}

// Values returns one scope's keys and values, without times.
func (a *Attributes) Values(scope AttributeScope) map[string]json.RawMessage {
	m := a.Shared
	if scope == AttrClient {
		m = a.Client
	}
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[k] = v.Value
	}
	return out
}

// Limits of a device's attributes.
const (
	MaxAttributes     = 200     // keys per scope and device
	MaxAttributeKey   = 128     // bytes
	MaxAttributeValue = 8 << 10 // bytes of JSON
)

// AttributeEvent is one change of a device's attributes.
type AttributeEvent struct {
	Device string                     `json:"device"`
	Scope  AttributeScope             `json:"scope"`
	At     int64                      `json:"at"`
	Change map[string]json.RawMessage `json:"changed"` // deleted keys as null
}

// AttributeStore keeps devices' attributes.
type AttributeStore interface {
	// Attributes returns a device's attributes (empty maps when it has none).
	Attributes(ctx context.Context, device string) (*Attributes, error)
	// SetAttributes sets keys of one scope at time at: with replace, the
	// scope becomes exactly set; otherwise set is merged, a null value
	// deleting its key. It returns what changed (deleted keys as null).
	SetAttributes(ctx context.Context, device string, scope AttributeScope, set map[string]json.RawMessage, replace bool, at int64) (map[string]json.RawMessage, error)
	// AttributeEvents returns a device's latest attribute changes, newest
	// first (each SetAttributes that changed something is one).
	AttributeEvents(ctx context.Context, device string, limit int) ([]AttributeEvent, error)
}

// ParseAttributes reads a JSON object of attributes as a device or a user
// sends it, checking keys and values against the limits; errors wrap
// ErrInvalid.
func ParseAttributes(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: attributes must be a JSON object", ErrInvalid)
	}
	if len(m) > MaxAttributes {
		return nil, fmt.Errorf("%w: more than %d attributes", ErrInvalid, MaxAttributes)
	}
	for k, v := range m {
		if k == "" || len(k) > MaxAttributeKey || !utf8.ValidString(k) {
			return nil, fmt.Errorf("%w: attribute keys are 1 to %d bytes of UTF-8", ErrInvalid, MaxAttributeKey)
		}
		if len(v) > MaxAttributeValue {
			return nil, fmt.Errorf("%w: attribute %q is over %d bytes", ErrInvalid, k, MaxAttributeValue)
		}
		var c bytes.Buffer
		json.Compact(&c, v)
		m[k] = c.Bytes()
	}
	return m, nil
}
