package devices

import (
	"encoding/json"
	"fmt"
)

// MaxDeviceIDLen is the longest device id accepted, in bytes.
const MaxDeviceIDLen = 128

// ValidateDeviceID reports whether id can name a device: 1 to MaxDeviceIDLen
// bytes of ASCII letters, digits and the punctuation "-_.:@". The set keeps ids
// safe as a single MQTT topic level (no '/', '+' or '#'), in URLs and in file
// names. It returns an error wrapping ErrInvalid.
func ValidateDeviceID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty device id", ErrInvalid)
	}
	if len(id) > MaxDeviceIDLen {
		return fmt.Errorf("%w: device id longer than %d bytes", ErrInvalid, MaxDeviceIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !idByte[id[i]] {
			return fmt.Errorf("%w: device id has character %q", ErrInvalid, id[i])
		}
	}
	return nil
}

var idByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-_.:@" {
		t[c] = true
	}
	return t
}()

// Device is what the hub knows about one device, kept up to date by the store
// writer in the same transaction as the device's messages.
type Device struct {
	// ID is the device id from the topic.
	ID string `json:"id"`
	// FirstSeen and LastSeen are receive times of the first and latest stored message, Unix ms.
	FirstSeen int64 `json:"first_seen"`
	LastSeen  int64 `json:"last_seen"`
	// MessageCount counts the device's stored messages.
	MessageCount int64 `json:"message_count"`
	// LastSeq is the sequence number of the device's latest stored message.
	LastSeq Seq `json:"last_seq"`
	// Status is the payload of the device's latest status message ("online",
	// "offline", ...), or "" when it never sent one; StatusAt is its receive time.
	Status   string `json:"status,omitempty"`
	StatusAt int64  `json:"status_at,omitempty"`
	// Latest holds the latest value of each metric with its timestamp.
	Latest map[string]Latest `json:"latest"`
}

// Latest is the most recent value of one metric.
type Latest struct {
	// Value is the JSON value as published.
	Value json.RawMessage `json:"v"`
	// TS is the reading's timestamp (device time when given), Unix ms.
	TS int64 `json:"ts"`
	// Seq is the message that carried it.
	Seq Seq `json:"seq"`
}
