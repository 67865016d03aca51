package devices

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Agg names how the values in one interval are combined.
type Agg string

// The aggregations a series can use.
const (
	AggAvg   Agg = "avg"
	AggMin   Agg = "min"
	AggMax   Agg = "max"
	AggSum   Agg = "sum"
	AggCount Agg = "count"
	AggFirst Agg = "first"
	AggLast  Agg = "last"
)

// Aggs lists every Agg.
var Aggs = []Agg{AggAvg, AggMin, AggMax, AggSum, AggCount, AggFirst, AggLast}

// ParseAgg returns the Agg named s, or an error wrapping ErrInvalid.
func ParseAgg(s string) (Agg, error) {
	for _, a := range Aggs {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("%w: unknown aggregation %q (want avg, min, max, sum, count, first or last)", ErrInvalid, s)
}

// SeriesQuery asks for numeric series of one device.
type SeriesQuery struct {
	Device  string
	Metrics []string
	// From and To bound the reading timestamps, Unix ms, inclusive.
	From, To int64
	// Interval is the bucket width in ms, aligned to the Unix epoch; 0 asks
	// for raw points.
	Interval int64
	// Agg combines the values of a bucket (ignored for raw points).
	Agg Agg
	// Limit caps the points per metric; more sets Truncated.
	Limit int
}

// Point is one value of a series: a bucket start (or a reading's time) and
// a value. It marshals as [ts, value].
type Point struct {
	TS int64
	V  float64
	// N counts the readings the point combines: 1 for a raw point.
	N int64
}

// MarshalJSON implements json.Marshaler.
func (p Point) MarshalJSON() ([]byte, error) {
	b := append([]byte{'['}, strconv.AppendInt(nil, p.TS, 10)...)
	b = append(b, ',')
	if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendFloat(b, p.V, 'g', -1, 64)
	}
	return append(b, ']'), nil
}

// Series is the answer to a SeriesQuery.
type Series struct {
	// Points holds each requested metric's points in time order; a metric
	// without numeric values has none.
	Points map[string][]Point `json:"points"`
	// Truncated tells that a metric had more points than Limit, or that
	// the scan stopped at its cap: the series is not complete.
	Truncated bool `json:"truncated"`
	// Scanned counts the messages read.
	Scanned int64 `json:"scanned"`
	// Seq is the consistency point: the series holds every message with a
	// sequence number up to Seq and none above, so a live feed from Seq
	// continues it with no gap and no overlap.
	Seq Seq `json:"seq"`
}

// NumericValue returns a reading's value as a number: JSON numbers as they
// are, true and false as 1 and 0; ok is false for anything else.
func NumericValue(raw json.RawMessage) (float64, bool) {
	switch s := string(raw); s {
	case "true":
		return 1, true
	case "false":
		return 0, true
	default:
		f, err := strconv.ParseFloat(s, 64)
		return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	}
}

// SaturatingAdd returns a + b for finite a and b, held to
// ±math.MaxFloat64 where the sum would overflow: a bucket's sum stays
// finite, so +Inf and -Inf can never meet and make NaN (which SQL stores
// as NULL). Readings are finite already (NumericValue).
func SaturatingAdd(a, b float64) float64 {
	s := a + b
	switch {
	case s > math.MaxFloat64:
		return math.MaxFloat64
	case s < -math.MaxFloat64:
		return -math.MaxFloat64
	case math.IsNaN(s):
		return 0
	}
	return s
}

// Bucket accumulates the values of one interval.
type Bucket struct {
	Count           int64
	Sum, Min, Max   float64
	First, Last     float64
	FirstTS, LastTS int64
}

// Add folds v, read at ts, into b.
func (b *Bucket) Add(v float64, ts int64) {
	if b.Count == 0 {
		b.Min, b.Max, b.First, b.Last, b.FirstTS, b.LastTS = v, v, v, v, ts, ts
	}
	b.Count++
	b.Sum = SaturatingAdd(b.Sum, v)
	b.Min, b.Max = math.Min(b.Min, v), math.Max(b.Max, v)
	if ts < b.FirstTS {
		b.First, b.FirstTS = v, ts
	}
	if ts >= b.LastTS {
		b.Last, b.LastTS = v, ts
	}
}

// Value returns the bucket's value under a.
func (b *Bucket) Value(a Agg) float64 {
	switch a {
	case AggMin:
		return b.Min
	case AggMax:
		return b.Max
	case AggSum:
		return b.Sum
	case AggCount:
		return float64(b.Count)
	case AggFirst:
		return b.First
	case AggLast:
		return b.Last
	default:
		return b.Sum / float64(b.Count)
	}
}

// Merge folds o, the aggregate of other readings, into b.
func (b *Bucket) Merge(o Bucket) {
	if o.Count == 0 {
		return
	}
	if b.Count == 0 {
		*b = o
		return
	}
	b.Count += o.Count
	b.Sum = SaturatingAdd(b.Sum, o.Sum)
	b.Min, b.Max = math.Min(b.Min, o.Min), math.Max(b.Max, o.Max)
	if o.FirstTS < b.FirstTS {
		b.First, b.FirstTS = o.First, o.FirstTS
	}
	if o.LastTS >= b.LastTS {
		b.Last, b.LastTS = o.Last, o.LastTS
	}
}

// FloorDiv divides rounding towards minus infinity, so that buckets before
// 1970 align too.
func FloorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
