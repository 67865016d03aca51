package devices

import (
	"context"
	"errors"
)

// Sentinel errors shared by every adapter. Adapters wrap them with context and
// translate driver errors into them at their boundary; the dashboard maps them
// to HTTP status codes in one place.
var (
	// ErrNotFound means the requested device or message does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid means the caller passed a value that breaks a documented rule.
	ErrInvalid = errors.New("invalid")
	// ErrConflict means the request conflicts with existing state.
	ErrConflict = errors.New("conflict")
	// ErrQueueFull means a bounded queue had no room and the caller asked not to wait.
	ErrQueueFull = errors.New("queue full")
	// ErrClosed means the component has been closed and takes no more work.
	ErrClosed = errors.New("closed")
	// ErrUnauthorized means a credential or token is missing, unknown or revoked.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden means the credential is valid but does not allow the action.
	ErrForbidden = errors.New("forbidden")
	// ErrTooManyMetrics means a message would give its device more metric
	// names than the store keeps per device.
	ErrTooManyMetrics = errors.New("too many metric names for the device")
	// ErrMetricName means a metric name is longer than the store accepts.
	ErrMetricName = errors.New("metric name too long")
)

// RefusalReason returns the Reason a writer's refusal of a message is
// counted under: ReasonTooManyMetrics, ReasonMetricName, ReasonQueueFull
// (no room, or a write that waited for room and gave up, such as a last
// will), or ReasonShuttingDown for anything else (the writer is closing).
func RefusalReason(err error) Reason {
	switch {
	case errors.Is(err, ErrTooManyMetrics):
		return ReasonTooManyMetrics
	case errors.Is(err, ErrMetricName):
		return ReasonMetricName
	case errors.Is(err, ErrQueueFull), errors.Is(err, context.DeadlineExceeded):
		return ReasonQueueFull // a write that waited for room and gave up
	}
	return ReasonShuttingDown
}
