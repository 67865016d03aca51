package dashboard

import (
	"encoding/base64"
	"encoding/json"

	"github.com/telehub/telehub/devices"
)

// cursor is the opaque position of a page, handed to clients base64url-encoded.
// It records the order it belongs to, so it cannot be reused with the other.
type cursor struct {
	Desc bool   `json:"d,omitempty"`
	TS   int64  `json:"t,omitempty"`
	Seq  int64  `json:"s,omitempty"`
	Name string `json:"n,omitempty"` // device listings: the last device id
	// Received marks a listing by receive time (time=received).
	Received bool `json:"r,omitempty"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 512 {
		return c, invalid("cursor", "not a cursor this API issued")
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, invalid("cursor", "not a cursor this API issued")
	}
	return c, nil
}

func (c cursor) position() *devices.Position {
	return &devices.Position{TS: c.TS, Seq: devices.Seq(c.Seq)}
}
