package devices

import (
	"sync"
	"time"
)

// Throttle decides whether an event for a key (a device, a reason) may be
// logged now, so that a misbehaving device produces one log line per
// Interval with a count rather than one per message. The zero value allows
// one event per key per minute.
type Throttle struct {
	// Interval between logged events for the same key. Zero means one minute.
	Interval time.Duration

	mu   sync.Mutex
	last map[string]throttleEntry
}

// maxThrottleKey is the most of a key Throttle keeps.
const maxThrottleKey = 256

type throttleEntry struct {
	at         time.Time
	suppressed int
}

// Allow reports whether an event for key may be logged at now, and how many
// events for key were suppressed since the last one that was.
func (t *Throttle) Allow(key string, now time.Time) (ok bool, suppressed int) {
	iv := t.Interval
	if iv <= 0 {
		iv = time.Minute
	}
	if len(key) > maxThrottleKey {
		key = key[:maxThrottleKey] // keys may embed client input: topics are up to 64 KiB
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil {
		t.last = make(map[string]throttleEntry)
	}
	e, seen := t.last[key]
	if seen && now.Sub(e.at) < iv {
		e.suppressed++
		t.last[key] = e
		return false, 0
	}
	if len(t.last) >= 10000 { // bound memory under a flood of distinct keys
		for k, v := range t.last {
			if now.Sub(v.at) >= iv {
				delete(t.last, k)
			}
		}
		if len(t.last) >= 10000 {
			return false, 0
		}
	}
	t.last[key] = throttleEntry{at: now}
	return true, e.suppressed
}
