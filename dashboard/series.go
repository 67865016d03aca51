package dashboard

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/telehub/telehub/devices"
)

// Limits of GET /api/v1/devices/{id}/series.
const (
	MaxSeriesMetrics = 20
	MaxRawPoints     = 10000
	MaxSeriesPoints  = 100000
	DefaultSeriesWin = 24 * time.Hour
)

// niceIntervals are the intervals max_points chooses from, ms. Those of
// whole minutes and hours are served from rollups.
var niceIntervals = []int64{
	1_000, 2_000, 5_000, 10_000, 15_000, 30_000,
	60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
	3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
}

// pickInterval returns the smallest interval of niceIntervals, no shorter
// than least, that keeps [from, to] within n epoch-aligned buckets
// (counting the partial buckets at each end); past the list, whole days.
func pickInterval(from, to, n, least int64) int64 {
	fits := func(iv int64) bool { return devices.FloorDiv(to, iv)-devices.FloorDiv(from, iv)+1 <= n }
	for _, iv := range niceIntervals {
		if iv >= least && fits(iv) {
			return iv
		}
	}
	const day = 86_400_000
	iv := max((least+day-1)/day*day, day)
	if !fits(iv) {
		iv = ((to-from)/max(n-1, 1)/day + 1) * day
		for i := 0; !fits(iv) && i < 1_000_000; i++ { // bounded: a range across 1970 never fits one bucket
			iv += day
		}
	}
	return iv
}

// ParseInterval reads an interval: a number and a unit, ms, s, m, h or d
// ("10s", "1m", "1h", "1d"), from 1 s to 366 d. It returns milliseconds.
func ParseInterval(v string) (int64, error) {
	units := []struct {
		suffix string
		ms     int64
	}{{"ms", 1}, {"s", 1000}, {"m", 60_000}, {"h", 3_600_000}, {"d", 86_400_000}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok && num != "" {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || n <= 0 || n > 366*86_400_000/u.ms {
				break
			}
			if ms := n * u.ms; ms >= 1000 {
				return ms, nil
			}
			break
		}
	}
	return 0, invalid("interval", "want a duration from 1s to 366d such as 10s, 1m, 1h or 1d, got %q", v)
}

// handleSeries serves GET /api/v1/devices/{id}/series: numeric series of
// the listed metrics over from/to (default: the last 24 hours), downsampled
// with interval and agg, or with max_points, where the hub picks the
// smallest round interval (1s, 2s, 5s, ... 1m ... 1h ... 1d) that keeps
// every series within max_points.
// Without either, raw points up to 10,000 per metric. "truncated" says
// when the answer is not complete.
func (s *Server) handleSeries(c *fiber.Ctx) error {
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	q := devices.SeriesQuery{Device: id, Agg: devices.AggAvg}
	for _, m := range strings.Split(c.Query("metrics"), ",") {
		if m = strings.TrimSpace(m); m != "" {
			q.Metrics = append(q.Metrics, utils.CopyString(m))
		}
	}
	if len(q.Metrics) == 0 || len(q.Metrics) > MaxSeriesMetrics {
		return invalid("metrics", "want 1 to %d comma-separated metric names", MaxSeriesMetrics)
	}
	q.To = time.Now().UnixMilli()
	if v := c.Query("to"); v != "" {
		if q.To, err = ParseTime(v); err != nil {
			return invalid("to", "%v", err)
		}
	}
	q.From = q.To - DefaultSeriesWin.Milliseconds()
	if v := c.Query("from"); v != "" {
		if q.From, err = ParseTime(v); err != nil {
			return invalid("from", "%v", err)
		}
	}
	if q.From > q.To {
		return invalid("from", "is after \"to\"")
	}
	if v := c.Query("agg"); v != "" {
		if q.Agg, err = devices.ParseAgg(v); err != nil {
			return invalid("agg", "want avg, min, max, sum, count, first or last, got %q", v)
		}
	}
	if v := c.Query("interval"); v != "" {
		if q.Interval, err = ParseInterval(v); err != nil {
			return err
		}
	}
	q.Limit = MaxRawPoints
	if q.Interval > 0 {
		q.Limit = MaxSeriesPoints
	}
	if v := c.Query("max_points"); v != "" {
		n, err := intParam("max_points", v, 0, 1, MaxSeriesPoints)
		if err != nil {
			return err
		}
		q.Interval = pickInterval(q.From, q.To, n, q.Interval)
		q.Limit = int(n)
	}
	counts := false
	switch v := c.Query("counts"); v {
	case "", "0", "false":
	case "1", "true":
		counts = true
	default:
		return invalid("counts", "want 1, true, 0 or false, got %q", v)
	}
	series, err := s.Messages.Series(c.UserContext(), q)
	if err != nil {
		return err
	}
	var points any = series.Points
	if counts {
		points = countedPoints(series.Points)
	}
	return c.JSON(fiber.Map{
		"device": id, "metrics": q.Metrics, "from": q.From, "to": q.To,
		"interval_ms": q.Interval, "agg": q.Agg,
		"points": points, "truncated": series.Truncated, "scanned": series.Scanned,
		"seq": series.Seq,
	})
}

// countedPoints writes each point as [ts, value, readings], so that a client
// can merge later readings into a bucket exactly (the dashboard does, for
// live points that fall into a bucket it already has).
func countedPoints(in map[string][]devices.Point) map[string][][3]any {
	out := make(map[string][][3]any, len(in))
	for name, pts := range in {
		rows := make([][3]any, len(pts))
		for i, p := range pts {
			var v any = p.V
			if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
				v = nil
			}
			rows[i] = [3]any{p.TS, v, p.N}
		}
		out[name] = rows
	}
	return out
}
