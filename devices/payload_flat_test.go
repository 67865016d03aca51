package devices

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeFlat: wherever the fast path takes a payload, it decodes it
// exactly as the general path does.
func FuzzDecodeFlat(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join("testdata", "payloads", dir, "*.json"))
		for _, file := range files {
			b, _ := os.ReadFile(file)
			f.Add(b)
		}
	}
	for _, s := range []string{`{}`, ` { "a" : -0.5e+3 , "b":true,"c":null,"d":"x"} `, `{"a":1,"a":2}`, `{"ts":1,"ts":2,"v":1}`,
		`{"a":01}`, `{"a":1.}`, `{"a":"\u00e9"}`, `{"values":{"t":1},"ts":5}`, `{"a":[1]}`, `{"a":1}x`, `{"ts":"2026-01-01T00:00:00Z","v":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if !utf8.Valid(p) {
			return // DecodePayload flags it before either path
		}
		ts, values, flags, ok := decodeFlat(p, 42)
		if !ok {
			return
		}
		wts, wvalues, wflags := decodeObjectPayload(p, 42)
		if ts != wts || flags != wflags || len(values) != len(wvalues) {
			t.Fatalf("%q: fast ts=%d flags=%v %d values; general ts=%d flags=%v %d values", p, ts, flags, len(values), wts, wflags, len(wvalues))
		}
		for i := range values {
			v, w := values[i], wvalues[i]
			if v.Name != w.Name || !bytes.Equal(v.Value, w.Value) || v.TS != w.TS {
				t.Fatalf("%q: value %d fast %s=%s@%d, general %s=%s@%d", p, i, v.Name, v.Value, v.TS, w.Name, w.Value, w.TS)
			}
		}
	})
}

// BenchmarkDecodePayload: a typical telemetry payload, through the fast
// path and through the general one.
//
//	go test -run '^$' -bench DecodePayload -benchmem ./devices
func BenchmarkDecodePayload(b *testing.B) {
	p := []byte(`{"temp":21.53,"hum":40.2,"pressure":1013.25,"battery":97,"seq":123456,"ts":1764489600000}`)
	b.Run("flat", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			DecodePayload(p, 1)
		}
	})
	b.Run("general", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			decodeObjectPayload(p, 1)
		}
	})
}
