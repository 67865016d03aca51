package devices

// MinTime and MaxTime bound every time the hub accepts, in Unix
// milliseconds: from the start of the year -10000 to the start of the year
// 10000. A device timestamp outside is flagged FlagBadTS and replaced by
// the receive time, and the API refuses query bounds outside, so that no
// arithmetic on times (bucket widths, ranges, slack) can overflow int64.
const (
	MinTime int64 = -377_736_739_200_000
	MaxTime int64 = 253_402_300_800_000
)

// ValidTime reports whether ms lies within [MinTime, MaxTime].
func ValidTime(ms int64) bool { return ms >= MinTime && ms <= MaxTime }

// AllTime returns the bounds that leave a time range unbounded on both
// sides: MinTime and MaxTime.
func AllTime() (from, to int64) { return MinTime, MaxTime }
