package dashboard

import (
	"fmt"
	"strconv"
	"time"

	"github.com/telehub/telehub/devices"
)

func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// ParseTime reads a time parameter: Unix milliseconds or RFC 3339, between
// the years -10000 and 10000 (devices.MinTime, devices.MaxTime). It returns
// Unix ms.
func ParseTime(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t, perr := time.Parse(time.RFC3339Nano, v)
		if perr != nil {
			return 0, fmt.Errorf("want Unix milliseconds or RFC 3339, got %q", v)
		}
		n, err = t.UnixMilli(), nil
	}
	if !devices.ValidTime(n) {
		return 0, fmt.Errorf("want a time between the years -10000 and 10000, got %q", v)
	}
	return n, nil
}

// intParam reads an integer query parameter in [lo, hi], or def when absent.
func intParam(name, v string, def, lo, hi int64) (int64, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, invalid(name, "want an integer, got %q", v)
	}
	if n < lo || n > hi {
		return 0, invalid(name, "must be between %d and %d, got %d", lo, hi, n)
	}
	return n, nil
}

// timeRange reads the optional from and to parameters (Unix ms or RFC 3339)
// and checks that from is not after to. An absent bound is devices.MinTime
// or MaxTime; 0 is the epoch.
func timeRange(c interface {
	Query(string, ...string) string
}) (from, to int64, err error) {
	from, to = devices.AllTime()
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"from", &from}, {"to", &to}} {
		if v := c.Query(p.name); v != "" {
			t, err := ParseTime(v)
			if err != nil {
				return 0, 0, invalid(p.name, "%v", err)
			}
			*p.dst = t
		}
	}
	if from > to {
		return 0, 0, invalid("from", "is after \"to\"")
	}
	return from, to, nil
}
