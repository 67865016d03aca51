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

// MessageLister lists stored messages (devices.MessageService's
// ListMessages).
type MessageLister interface {
	ListMessages(ctx context.Context, f devices.MessageFilter) ([]devices.Message, error)
}

// CheckSeriesQuery returns ErrInvalid for a query no backend answers.
func CheckSeriesQuery(q devices.SeriesQuery) error {
	if len(q.Metrics) == 0 || q.Limit <= 0 || q.Interval < 0 || q.From > q.To {
		return fmt.Errorf("%w: series needs metrics, a positive limit and from <= to", devices.ErrInvalid)
	}
	return nil
}

// SeriesFromMessages answers q from the messages themselves: it reads the
// device's messages in the range a page at a time (in ts order, keyset
// pages), decodes the payloads and aggregates the requested metrics into
// epoch-aligned buckets. Messages above seq (committed after the caller
// read it) are skipped, so that the answer is exact up to Series.Seq.
func SeriesFromMessages(ctx context.Context, l MessageLister, q devices.SeriesQuery, seq devices.Seq) (*devices.Series, error) {
	if err := CheckSeriesQuery(q); err != nil {
		return nil, err
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
	out := &devices.Series{Points: make(map[string][]devices.Point, len(q.Metrics)), Seq: seq}
	f := devices.MessageFilter{Device: q.Device, From: q.From, To: q.To, Limit: 1000}
scan:
	for {
		page, err := l.ListMessages(ctx, f)
		if err != nil {
			return nil, err
		}
		for i := range page {
			m := &page[i]
			out.Scanned++
			if m.Seq > out.Seq || m.Kind == devices.KindStatus || !m.IsJSON() {
				continue
			}
			_, values, _ := devices.DecodePayload(m.Payload, m.Received)
			for _, v := range values {
				if !want[v.Name] || v.TS < q.From || v.TS > q.To {
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
					a.raw = append(a.raw, devices.Point{TS: v.TS, V: x, N: 1})
					continue
				}
				start := devices.FloorDiv(v.TS, q.Interval) * q.Interval
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
			pts = BucketPoints(a.buckets, q.Agg)
		}
		SetPoints(out, name, pts, q.Limit)
	}
	return out, nil
}

// SetPoints stores a metric's points in time order, cut to limit (which
// marks the answer truncated).
func SetPoints(out *devices.Series, name string, pts []devices.Point, limit int) {
	sort.Slice(pts, func(i, j int) bool { return pts[i].TS < pts[j].TS })
	if len(pts) > limit {
		pts, out.Truncated = pts[:limit], true
	}
	out.Points[name] = pts
}

// BucketPoints turns buckets keyed by start time into points under agg.
func BucketPoints(bs map[int64]*devices.Bucket, agg devices.Agg) []devices.Point {
	pts := make([]devices.Point, 0, len(bs))
	for start, b := range bs {
		pts = append(pts, devices.Point{TS: start, V: b.Value(agg), N: b.Count})
	}
	return pts
}
