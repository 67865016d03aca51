package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/sqlite"
)

func TestMessageService_Series(t *testing.T) {
	db := MustOpenDB(t)
	w := MustOpenWriter(t, db)
	var in []devices.Message
	for i := 0; i < 600; i++ { // one reading a second for 10 minutes: temp = i, on = i is even
		payload := fmt.Appendf(nil, `{"temp":%d,"on":%v,"label":"x","ts":%d}`, i, i%2 == 0, int64(i)*1000)
		ts, values, flags := devices.DecodePayload(payload, 0)
		in = append(in, devices.Message{Device: "s", Topic: "devices/s/telemetry", Kind: devices.KindTelemetry,
			TS: ts, Received: ts, Flags: flags, Payload: payload, Values: values})
	}
	writeAll(t, w, in)
	s := sqlite.NewMessageService(db)
	ctx := context.Background()
	q := devices.SeriesQuery{Device: "s", Metrics: []string{"temp"}, From: 0, To: 599_999, Interval: 60_000, Limit: 1000}
	for agg, want := range map[devices.Agg]func(k int) float64{
		devices.AggAvg:   func(k int) float64 { return float64(60*k) + 29.5 },
		devices.AggMin:   func(k int) float64 { return float64(60 * k) },
		devices.AggMax:   func(k int) float64 { return float64(60*k + 59) },
		devices.AggSum:   func(k int) float64 { return float64(60*60*k + 59*60/2) },
		devices.AggCount: func(k int) float64 { return 60 },
		devices.AggFirst: func(k int) float64 { return float64(60 * k) },
		devices.AggLast:  func(k int) float64 { return float64(60*k + 59) },
	} {
		q.Agg = agg
		got, err := s.Series(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		pts := got.Points["temp"]
		if len(pts) != 10 || got.Truncated || got.Scanned == 0 {
			t.Fatalf("%s: %d points, truncated %v, scanned %d; want 10, false, some", agg, len(pts), got.Truncated, got.Scanned)
		}
		for k, p := range pts {
			if p.TS != int64(k)*60_000 || p.V != want(k) {
				t.Fatalf("%s: point %d = %+v, want ts %d value %v", agg, k, p, k*60_000, want(k))
			}
		}
	}

	t.Run("BooleansAndStrings", func(t *testing.T) {
		got, _ := s.Series(ctx, devices.SeriesQuery{Device: "s", Metrics: []string{"on", "label"}, Interval: 600_000, Agg: devices.AggAvg, Limit: 10})
		if on := got.Points["on"]; len(on) != 1 || on[0].V != 0.5 || len(got.Points["label"]) != 0 {
			t.Fatalf("points=%v: want on averaging 0.5 and no label points", got.Points)
		}
	})
	t.Run("RawTruncated", func(t *testing.T) {
		got, _ := s.Series(ctx, devices.SeriesQuery{Device: "s", Metrics: []string{"temp"}, From: 100_000, To: 599_999, Limit: 50})
		if pts := got.Points["temp"]; len(pts) != 50 || !got.Truncated || pts[0].TS != 100_000 || pts[49].V != 149 {
			t.Fatalf("raw: %d points (truncated %v), first %+v", len(pts), got.Truncated, pts[0])
		}
	})
	t.Run("Seq", func(t *testing.T) {
		// Both paths name the last message they include, for a live feed to
		// continue from.
		for _, interval := range []int64{0, 1000, 60_000} {
			got, err := s.Series(ctx, devices.SeriesQuery{Device: "s", Metrics: []string{"temp"}, Interval: interval, Limit: 1000})
			if err != nil || got.Seq != 600 {
				t.Fatalf("interval %d: seq=%d err=%v, want 600", interval, got.Seq, err)
			}
		}
	})
	t.Run("Errors", func(t *testing.T) {
		if _, err := s.Series(ctx, devices.SeriesQuery{Device: "nope", Metrics: []string{"t"}, Limit: 1}); !errors.Is(err, devices.ErrNotFound) {
			t.Fatalf("err=%v, want ErrNotFound", err)
		}
		if _, err := s.Series(ctx, devices.SeriesQuery{From: devices.MinTime, To: devices.MaxTime, Device: "s", Limit: 1}); !errors.Is(err, devices.ErrInvalid) {
			t.Fatalf("err=%v, want ErrInvalid", err)
		}
	})
}
