package dashboard

import (
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
// smallest whole-second interval that keeps every series within max_points.
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
		span := q.To - q.From + 1
		need := (span + n - 1) / n        // ms per point so that span/interval <= n
		need = (need + 999) / 1000 * 1000 // whole seconds
		if q.Interval < need {
			q.Interval = need
		}
		// Epoch alignment can add a partial bucket at each end.
		for (q.To/q.Interval)-(q.From/q.Interval)+1 > n {
			q.Interval += 1000
		}
		q.Limit = int(n)
	}
	series, err := s.Messages.Series(c.UserContext(), q)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{
		"device": id, "metrics": q.Metrics, "from": q.From, "to": q.To,
		"interval_ms": q.Interval, "agg": q.Agg,
		"points": series.Points, "truncated": series.Truncated, "scanned": series.Scanned,
	})
}
