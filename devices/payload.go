package devices

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

// DecodePayload decodes a telemetry payload received at receivedMs (Unix ms)
// and returns the message timestamp, the metrics it carries and the flags
// describing anything unusual. It never fails: what it cannot read is kept
// as published and flagged. The accepted shapes are
//
//   - an object of metrics, optionally with "ts": {"temp":21.5,"ts":1700000000000}
//   - ThingsBoard's {"ts":1700000000000,"values":{"temp":21.5}}
//   - ThingsBoard's array of those: [{"ts":..,"values":{..}}, ...]
//
// "ts" is Unix milliseconds (an integer, or a number that is truncated) or an
// RFC 3339 string. The message timestamp is the latest reading's timestamp.
func DecodePayload(payload []byte, receivedMs int64) (ts int64, values []Value, flags Flags) {
	if len(payload) == 0 {
		return receivedMs, nil, FlagEmpty
	}
	if !utf8.Valid(payload) {
		return receivedMs, nil, FlagNotJSON
	}
	first := firstByte(payload)
	if first == '{' {
		if ts, values, flags, ok := decodeFlat(payload, receivedMs); ok {
			return ts, values, flags
		}
		return decodeObjectPayload(payload, receivedMs)
	}
	if !json.Valid(payload) {
		return receivedMs, nil, FlagNotJSON
	}
	switch first {
	case '[':
		var arr []map[string]json.RawMessage
		if err := json.Unmarshal(payload, &arr); err != nil || len(arr) == 0 {
			return receivedMs, nil, FlagNotObject
		}
		ts = math.MinInt64
		for _, obj := range arr {
			if _, ok := obj["values"]; !ok {
				return receivedMs, nil, FlagNotObject
			}
			t, v, f := decodeObject(obj, receivedMs)
			values = append(values, v...)
			flags |= f
			ts = max(ts, t)
		}
		return ts, values, flags
	default:
		return receivedMs, nil, FlagNotObject
	}
}

// decodeObjectPayload decodes a payload that starts with '{' the general
// way: Unmarshal validates as it parses, so the payload is read once.
func decodeObjectPayload(payload []byte, receivedMs int64) (int64, []Value, Flags) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil {
		return receivedMs, nil, FlagNotJSON
	}
	return decodeObject(obj, receivedMs)
}

func decodeObject(obj map[string]json.RawMessage, receivedMs int64) (int64, []Value, Flags) {
	ts, flags := receivedMs, Flags(0)
	if raw, ok := obj["ts"]; ok {
		if t, ok := parseTS(raw); ok {
			ts = t
		} else {
			flags |= FlagBadTS
		}
	}
	// ThingsBoard shape: "values" is an object and "ts" is the only other key.
	metrics, skipTS := obj, true
	if raw, ok := obj["values"]; ok && firstByte(raw) == '{' && (len(obj) == 1 || len(obj) == 2 && obj["ts"] != nil) {
		var inner map[string]json.RawMessage
		if json.Unmarshal(raw, &inner) == nil {
			metrics, skipTS = inner, false
		}
	}
	values := make([]Value, 0, len(metrics))
	for k, v := range metrics {
		if skipTS && k == "ts" {
			continue
		}
		values = append(values, Value{Name: k, Value: v, TS: ts})
	}
	sort.Slice(values, func(i, j int) bool { return values[i].Name < values[j].Name })
	return ts, values, flags
}

// parseTS reads a "ts" value: Unix ms as a JSON number, or an RFC 3339 string.
func parseTS(raw json.RawMessage) (int64, bool) {
	if firstByte(raw) == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, false
		}
		return t.UnixMilli(), ValidTime(t.UnixMilli())
	}
	raw = bytes.TrimSpace(raw)
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, ValidTime(n)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || f > float64(MaxTime) || f < float64(MinTime) {
		return 0, false
	}
	return int64(f), true
}

func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}
