package devices

import (
	"cmp"
	"encoding/json"
	"slices"
)

// decodeFlat is DecodePayload's fast path for the common payload: one flat
// JSON object whose values are numbers, true, false, null or strings
// without escapes, such as {"temp":21.5,"hum":40,"ts":1700000000000}. It
// scans the bytes once, with no map, no reflection and two allocations (the
// values and one buffer their bytes are copied into, so that a latest value
// never pins a large payload). It reports false for anything else (nested
// values, escapes, duplicate names, the ThingsBoard shapes, invalid JSON),
// which the general path then decodes; FuzzDecodePayload checks that both
// agree.
func decodeFlat(p []byte, receivedMs int64) (ts int64, values []Value, flags Flags, ok bool) {
	i := skipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return 0, nil, 0, false
	}
	type span struct{ k0, k1, v0, v1 int }
	var spans [16]span
	fields := spans[:0]
	size := 0
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		if skipSpace(p, i+1) != len(p) {
			return 0, nil, 0, false
		}
		return receivedMs, []Value{}, 0, true
	}
	for {
		// "name"
		if i >= len(p) || p[i] != '"' {
			return 0, nil, 0, false
		}
		k0 := i + 1
		k1 := plainStringEnd(p, k0)
		if k1 < 0 {
			return 0, nil, 0, false
		}
		i = skipSpace(p, k1+1)
		if i >= len(p) || p[i] != ':' {
			return 0, nil, 0, false
		}
		i = skipSpace(p, i+1)
		// value
		v0 := i
		v1 := scalarEnd(p, i)
		if v1 < 0 {
			return 0, nil, 0, false
		}
		fields = append(fields, span{k0, k1, v0, v1})
		size += k1 - k0 + v1 - v0
		i = skipSpace(p, v1)
		if i >= len(p) {
			return 0, nil, 0, false
		}
		if p[i] == '}' {
			if skipSpace(p, i+1) != len(p) {
				return 0, nil, 0, false
			}
			break
		}
		if p[i] != ',' {
			return 0, nil, 0, false
		}
		i = skipSpace(p, i+1)
	}
	ts = receivedMs
	buf := make([]byte, 0, size)
	values = make([]Value, 0, len(fields))
	for _, f := range fields {
		name, raw := p[f.k0:f.k1], p[f.v0:f.v1]
		switch string(name) {
		case "values":
			return 0, nil, 0, false // perhaps ThingsBoard's shape: the general path decides
		case "ts":
			if t, ok := parseTS(raw); ok {
				ts = t
			} else {
				flags |= FlagBadTS
			}
			continue
		}
		start := len(buf)
		buf = append(buf, raw...)
		values = append(values, Value{Name: string(name), Value: json.RawMessage(buf[start:len(buf):len(buf)])})
	}
	slices.SortFunc(values, func(a, b Value) int { return cmp.Compare(a.Name, b.Name) })
	for j := range values {
		if j > 0 && values[j].Name == values[j-1].Name {
			return 0, nil, 0, false // a name twice: the general path keeps the last
		}
		values[j].TS = ts
	}
	if n := len(fields); n > 1 {
		// "ts" twice is a duplicate too.
		seen := 0
		for _, f := range fields {
			if string(p[f.k0:f.k1]) == "ts" {
				seen++
			}
		}
		if seen > 1 {
			return 0, nil, 0, false
		}
	}
	return ts, values, flags, true
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}

// plainStringEnd returns the index of the quote that ends a string starting
// at i (after its opening quote), or -1 if it has an escape or a control
// character (valid UTF-8 was checked before).
func plainStringEnd(p []byte, i int) int {
	for ; i < len(p); i++ {
		switch c := p[i]; {
		case c == '"':
			return i
		case c == '\\' || c < 0x20:
			return -1
		}
	}
	return -1
}

// scalarEnd returns the index just past a JSON number, true, false, null or
// plain string starting at i, or -1.
func scalarEnd(p []byte, i int) int {
	if i >= len(p) {
		return -1
	}
	switch c := p[i]; {
	case c == '"':
		if e := plainStringEnd(p, i+1); e >= 0 {
			return e + 1
		}
		return -1
	case c == 't':
		return literalEnd(p, i, "true")
	case c == 'f':
		return literalEnd(p, i, "false")
	case c == 'n':
		return literalEnd(p, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		return numberEnd(p, i)
	}
	return -1
}

func literalEnd(p []byte, i int, lit string) int {
	if len(p)-i >= len(lit) && string(p[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// numberEnd checks JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func numberEnd(p []byte, i int) int {
	digits := func(i int) int {
		j := i
		for j < len(p) && p[j] >= '0' && p[j] <= '9' {
			j++
		}
		return j
	}
	if p[i] == '-' {
		i++
	}
	switch {
	case i < len(p) && p[i] == '0':
		i++
	case i < len(p) && p[i] >= '1' && p[i] <= '9':
		i = digits(i)
	default:
		return -1
	}
	if i < len(p) && p[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}
