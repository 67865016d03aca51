package broker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/broker"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

// metricsPayload returns a JSON object of n metrics named prefix0.. prefixN-1.
func metricsPayload(prefix string, n int) []byte {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%s%d":%d`, prefix, i, i)
	}
	b.WriteByte('}')
	return []byte(b.String())
}

// TestBroker_MetricLimits: a device cannot grow its metric names without
// bound. 100 messages of 5,000 new names each once took the hub from 19 to
// 722 MB and made every commit marshal them all. Past --max-metrics the
// message is refused (MQTT 5: 0x97) and counted, names longer than
// --max-metric-name too (0x99), and other devices are not affected.
func TestBroker_MetricLimits(t *testing.T) {
	db := storetest.MustOpenDB(t)
	w := sqlite.NewWriter(db)
	w.MaxMetrics, w.MaxMetricName = 100, 32
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	var stats devices.Stats
	b := MustOpen(t, w, func(b *broker.Broker) { b.Stats = &stats })
	c := dialV5(t, b.ListenAddr())

	if got := c.publish(t, "devices/wide/telemetry", metricsPayload("a", 60)); got != 0 {
		t.Fatalf("60 names: PUBACK %#x, want 0", got)
	}
	if got := c.publish(t, "devices/wide/telemetry", metricsPayload("a", 60)); got != 0 {
		t.Fatalf("the same 60 names again: PUBACK %#x, want 0", got)
	}
	if got := c.publish(t, "devices/wide/telemetry", metricsPayload("b", 50)); got != packets.ErrQuotaExceeded.Code {
		t.Fatalf("50 more names past a cap of 100: PUBACK %#x, want %#x", got, packets.ErrQuotaExceeded.Code)
	}
	for i := 0; i < 100; i++ { // a flood of new names, one message each
		c.publish(t, "devices/wide/telemetry", metricsPayload(fmt.Sprintf("flood%d_", i), 500))
	}
	long := []byte(`{"` + strings.Repeat("x", 33) + `":1}`)
	if got := c.publish(t, "devices/other/telemetry", long); got != packets.ErrPayloadFormatInvalid.Code {
		t.Fatalf("33-byte name: PUBACK %#x, want %#x", got, packets.ErrPayloadFormatInvalid.Code)
	}
	if got := c.publish(t, "devices/other/telemetry", metricsPayload("t", 100)); got != 0 {
		t.Fatalf("another device's 100 names: PUBACK %#x, want 0", got)
	}
	s := stats.Snapshot()
	if s.Rejected[devices.ReasonTooManyMetrics] != 101 || s.Rejected[devices.ReasonMetricName] != 1 {
		t.Fatalf("rejected %v, want 101 too_many_metrics and 1 metric_name_too_long", s.Rejected)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := w.Device("wide")
		if err == nil && d.MessageCount == 2 {
			if len(d.Latest) != 60 {
				t.Fatalf("wide has %d latest values, want 60", len(d.Latest))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wide: %v %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rows, _ := rawQuery(t, db, `SELECT count(*) FROM messages`)
	if fmt.Sprint(rows) != "[3]" {
		t.Fatalf("stored %v messages, want 3", rows)
	}
}
