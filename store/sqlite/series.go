package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// Series implements devices.MessageService. An interval of whole hours or
// whole minutes reads the rollups (seriesRollup); raw points and other
// intervals read the messages (seriesRaw).
func (s *MessageService) Series(ctx context.Context, q devices.SeriesQuery) (*devices.Series, error) {
	if err := store.CheckSeriesQuery(q); err != nil {
		return nil, err
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
		store.SetPoints(out, name, store.BucketPoints(bs, q.Agg), q.Limit)
	}
	return out, nil
}

// seriesRaw answers q from the messages (store.SeriesFromMessages).
func (s *MessageService) seriesRaw(ctx context.Context, q devices.SeriesQuery) (*devices.Series, error) {
	return store.SeriesFromMessages(ctx, s, q, s.LastSeq())
}

// floorDiv divides rounding towards minus infinity.
func floorDiv(a, b int64) int64 { return devices.FloorDiv(a, b) }
