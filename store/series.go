package store

import (
	"context"
	"fmt"
	"sort"

	"github.com/telehub/telehub/devices"
)

// MaxSeriesScan caps the messages one series query reads. A longer range
// comes back Truncated; it needs a coarser interval or a shorter range.
const MaxSeriesScan = 5_000_000

// Series implements devices.MessageService. It reads the device's messages
// in the range through its ts index, a page at a time, decodes the payloads
// and aggregates the requested metrics into epoch-aligned buckets.
func (s *MessageService) Series(ctx context.Context, q devices.SeriesQuery) (*devices.Series, error) {
	if len(q.Metrics) == 0 || q.Limit <= 0 || q.Interval < 0 || (q.From != 0 && q.To != 0 && q.From > q.To) {
		return nil, fmt.Errorf("%w: series needs metrics, a positive limit and from <= to", devices.ErrInvalid)
	}
	want := make(map[string]bool, len(q.Metrics))
	for _, m := range q.Metrics {
		want[m] = true
	}
	type acc struct {
		buckets map[int64]*devices.Bucket
		raw     []devices.Point
	}
	accs := make(map[string]*acc, len(q.Metrics))
	for _, m := range q.Metrics {
		accs[m] = &acc{buckets: map[int64]*devices.Bucket{}}
	}
	out := &devices.Series{Points: make(map[string][]devices.Point, len(q.Metrics))}
	f := devices.MessageFilter{Device: q.Device, From: q.From, To: q.To, Limit: 1000}
scan:
	for {
		page, err := s.ListMessages(ctx, f)
		if err != nil {
			return nil, err
		}
		for i := range page {
			m := &page[i]
			out.Scanned++
			if m.Kind == devices.KindStatus || !m.IsJSON() {
				continue
			}
			_, values, _ := devices.DecodePayload(m.Payload, m.Received)
			for _, v := range values {
				if !want[v.Name] || (q.From != 0 && v.TS < q.From) || (q.To != 0 && v.TS > q.To) {
					continue
				}
				x, ok := devices.NumericValue(v.Value)
				if !ok {
					continue
				}
				a := accs[v.Name]
				if q.Interval == 0 {
					if len(a.raw) >= q.Limit {
						out.Truncated = true
						continue
					}
					a.raw = append(a.raw, devices.Point{TS: v.TS, V: x})
					continue
				}
				start := floorDiv(v.TS, q.Interval) * q.Interval
				b := a.buckets[start]
				if b == nil {
					b = &devices.Bucket{}
					a.buckets[start] = b
				}
				b.Add(x, v.TS)
			}
			if out.Scanned >= MaxSeriesScan {
				out.Truncated = true
				break scan
			}
		}
		if len(page) < f.Limit {
			break
		}
		last := page[len(page)-1]
		f.After = &devices.Position{TS: last.TS, Seq: last.Seq}
	}
	for name, a := range accs {
		pts := a.raw
		if q.Interval > 0 {
			pts = make([]devices.Point, 0, len(a.buckets))
			for start, b := range a.buckets {
				pts = append(pts, devices.Point{TS: start, V: b.Value(q.Agg)})
			}
		}
		sort.Slice(pts, func(i, j int) bool { return pts[i].TS < pts[j].TS })
		if len(pts) > q.Limit {
			pts, out.Truncated = pts[:q.Limit], true
		}
		out.Points[name] = pts
	}
	return out, nil
}

// floorDiv divides rounding towards minus infinity, so buckets before 1970
// align too.
func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
