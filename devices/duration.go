package devices

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseRetention reads a retention period: "0" (keep everything), a number
// of days or weeks ("30d", "2w"), or a Go duration ("36h", "90m"). It
// returns an error wrapping ErrInvalid for anything else or a negative value.
func ParseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		d      time.Duration
	}{{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseFloat(num, 64)
			if err != nil || !(n >= 0 && n <= 100*365) { // also refuses NaN
				break
			}
			return time.Duration(n * float64(u.d)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: retention %q: want 0, days (30d), weeks (2w) or a duration such as 36h", ErrInvalid, s)
	}
	return d, nil
}
