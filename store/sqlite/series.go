package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/telehub/telehub/devices"
)

// MaxSeriesScan caps the messages one series query reads. A longer range
// comes back Truncated; it needs a coarser interval or a shorter range.
const MaxSeriesScan = 5_000_000

// Series implements devices.MessageService. An interval of whole hours or
// whole minutes reads the rollups (seriesRollup); raw points and other
// intervals read the messages (seriesRaw).
func (s *MessageService) Series(ctx context.Context, q devices.SeriesQuery) (*devices.Series, error) {
	if len(q.Metrics) == 0 || q.Limit <= 0 || q.Interval < 0 || q.From > q.To {
		return nil, fmt.Errorf("%w: series needs metrics, a positive limit and from <= to", devices.ErrInvalid)
	}
	switch {
	case q.Interval > 0 && q.Interval%rollupHour == 0:
		return s.seriesRollup(ctx, q, rollupHour)
	case q.Interval > 0 && q.Interval%rollupMinute == 0:
		return s.seriesRollup(ctx, q, rollupMinute)
	}
	return s.seriesRaw(ctx, q)
}

// seriesRollup answers q from the rollups of resolution res, which are
// complete up to meta.rollup_seq (read in the same snapshot), plus the raw
// messages above it. The range is widened to whole res buckets.
func (s *MessageService) seriesRollup(ctx context.Context, q devices.SeriesQuery, res int64) (*devices.Series, error) {
	var deviceID int64
	err := s.db.read.QueryRowContext(ctx, `SELECT id FROM devices WHERE name = ?`, q.Device).Scan(&deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("device %q: %w", q.Device, devices.ErrNotFound)
	} else if err != nil {
		return nil, err
	}
	// [lo, hi): q's bounds lie within devices.MinTime..MaxTime, far from overflow.
	lo, hi := floorDiv(q.From, res)*res, (floorDiv(q.To, res)+1)*res
	buckets := make(map[string]map[int64]*devices.Bucket, len(q.Metrics))
	for _, m := range q.Metrics {
		buckets[m] = map[int64]*devices.Bucket{}
	}
	target := func(metric string, ts int64) *devices.Bucket {
		start := floorDiv(ts, q.Interval) * q.Interval
		b := buckets[metric][start]
		if b == nil {
			b = &devices.Bucket{}
			buckets[metric][start] = b
		}
		return b
	}
	out := &devices.Series{Points: make(map[string][]devices.Point, len(q.Metrics))}

	tx, err := s.db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var watermark, upTo int64
	if err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'rollup_seq'`).Scan(&watermark); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	// The writer sets last_seq in every commit, so the snapshot holds
	// exactly the messages up to it.
	if err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'last_seq'`).Scan(&upTo); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	out.Seq = devices.Seq(upTo)
	in := strings.Repeat(",?", len(q.Metrics))[1:]
	args := []any{deviceID, res, lo, hi}
	for _, m := range q.Metrics {
		args = append(args, m)
	}
	// Read only the columns the aggregation needs (and count, which marks a
	// bucket as non-empty): at tens of thousands of rows this is most of the
	// time a query takes.
	var r devices.Bucket
	var metric string
	var bucket, upto int64
	cols, dst := "metric, bucket, upto_seq, count", []any{&metric, &bucket, &upto, &r.Count}
	// Rows a round of writes has brought past the watermark: a raw message
	// above it belongs to such a bucket only when above its upto_seq.
	type rowKey struct {
		metric string
		bucket int64
	}
	ahead := map[rowKey]int64{}
	switch q.Agg {
	case devices.AggAvg, devices.AggSum:
		cols, dst = cols+", sum", append(dst, &r.Sum)
	case devices.AggMin:
		cols, dst = cols+", min", append(dst, &r.Min)
	case devices.AggMax:
		cols, dst = cols+", max", append(dst, &r.Max)
	case devices.AggFirst:
		cols, dst = cols+", first_ts, first", append(dst, &r.FirstTS, &r.First)
	case devices.AggLast:
		cols, dst = cols+", last_ts, last", append(dst, &r.LastTS, &r.Last)
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+cols+` FROM rollups
		WHERE device_id = ? AND res = ? AND bucket >= ? AND bucket < ? AND metric IN (`+in+`)`, args...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		r = devices.Bucket{}
		if err := rows.Scan(dst...); err != nil {
			rows.Close()
			return nil, err
		}
		if q.Agg != devices.AggFirst {
			r.FirstTS = math.MaxInt64 // unread: never wins a merge
		}
		if q.Agg != devices.AggLast {
			r.LastTS = math.MinInt64
		}
		if q.Agg != devices.AggMin {
			r.Min = math.Inf(1)
		}
		if q.Agg != devices.AggMax {
			r.Max = math.Inf(-1)
		}
		target(metric, bucket).Merge(r)
		if upto > watermark {
			ahead[rowKey{metric, bucket}] = upto
		}
		out.Scanned++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// The messages the rollups do not hold yet, read in the same snapshot.
	want := make(map[string]bool, len(q.Metrics))
	for _, m := range q.Metrics {
		want[m] = true
	}
	tail, err := tx.QueryContext(ctx, `SELECT seq, kind, flags, received, payload FROM messages WHERE seq > ? AND +device_id = ? AND ts >= ? AND ts < ?`, watermark, deviceID, lo, hi)
	if err != nil {
		return nil, err
	}
	for tail.Next() {
		var m devices.Message
		var kind, flags int64
		if err := tail.Scan(&m.Seq, &kind, &flags, &m.Received, &m.Payload); err != nil {
			tail.Close()
			return nil, err
		}
		out.Scanned++
		m.Kind, m.Flags = devices.Kind(kind), devices.Flags(flags)
		if m.Kind != devices.KindTelemetry || !m.IsJSON() {
			continue
		}
		_, values, _ := devices.DecodePayload(m.Payload, m.Received)
		for _, v := range values {
			if x, ok := devices.NumericValue(v.Value); ok && want[v.Name] && v.TS >= lo && v.TS < hi {
				if upto, ok := ahead[rowKey{v.Name, floorDiv(v.TS, res) * res}]; ok && int64(m.Seq) <= upto {
					continue // the row holds it already
				}
				target(v.Name, v.TS).Add(x, v.TS)
			}
		}
	}
	tail.Close()
	if err := tail.Err(); err != nil {
		return nil, err
	}
	for name, bs := range buckets {
		setPoints(out, name, bucketPoints(bs, q.Agg), q.Limit)
	}
	return out, nil
}

// seriesRaw answers q from the messages: it reads the device's messages in
// the range through its ts index, a page at a time, decodes the payloads
// and aggregates the requested metrics into epoch-aligned buckets.
func (s *MessageService) seriesRaw(ctx context.Context, q devices.SeriesQuery) (*devices.Series, error) {
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
	// The pages below are separate reads; messages committed after this
	// point are skipped, so that the answer is exact up to out.Seq.
	out := &devices.Series{Points: make(map[string][]devices.Point, len(q.Metrics)), Seq: s.LastSeq()}
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
			pts = bucketPoints(a.buckets, q.Agg)
		}
		setPoints(out, name, pts, q.Limit)
	}
	return out, nil
}

// setPoints stores a metric's points in time order, cut to limit (which
// marks the answer truncated).
func setPoints(out *devices.Series, name string, pts []devices.Point, limit int) {
	sort.Slice(pts, func(i, j int) bool { return pts[i].TS < pts[j].TS })
	if len(pts) > limit {
		pts, out.Truncated = pts[:limit], true
	}
	out.Points[name] = pts
}

// bucketPoints turns buckets keyed by start time into points under agg.
func bucketPoints(bs map[int64]*devices.Bucket, agg devices.Agg) []devices.Point {
	pts := make([]devices.Point, 0, len(bs))
	for start, b := range bs {
		pts = append(pts, devices.Point{TS: start, V: b.Value(agg), N: b.Count})
	}
	return pts
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
