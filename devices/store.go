package devices

import (
	"context"
	"time"
)

// Store is a storage backend as the hub uses it: everything cmd/telehub
// needs from one, by interface. store/sqlite (the embedded default) and
// store/postgres implement it, and store/storetest's conformance suite
// checks that each behaves as documented here and on the interfaces it
// embeds.
type Store interface {
	MessageWriter
	MessageService
	DataDeleter
	CredentialService
	StatusRecorder
	RetentionService
	EventLog
	CommandStore
	AttributeStore
	AlertStore
	BoardStore
	MetricSettingStore

	// Activity lists every device's last-seen time and status, cheaply,
	// and ActivityOf one device's (Presence).
	Activity() []Activity
	ActivityOf(id string) (Activity, bool)

	// Healthy reports whether the latest commit succeeded, and the latest
	// error otherwise (readiness).
	Healthy() (bool, string)
	// QueueLen is the number of messages accepted and not yet committed;
	// Commits, CommitFailures and LastCommit describe the commits so far
	// (metrics).
	QueueLen() int
	Commits() int64
	CommitFailures() int64
	LastCommit() time.Duration

	// Drain stops taking messages, commits and acknowledges everything
	// accepted and saves what the backend holds in memory; reads go on
	// working until Close. When ctx ends first, Drain gives up on batches
	// that keep failing (their devices were not acknowledged).
	Drain(ctx context.Context) error
	// Close releases the database, draining first if that was not done.
	Close() error
}

// RetentionService keeps each device's messages for a while: the hub's
// retention, or a device's own.
type RetentionService interface {
	// RetentionOf returns the retention that applies to device and whether
	// it is the device's own.
	RetentionOf(ctx context.Context, device string) (time.Duration, bool, error)
	// SetRetention sets a device's own retention (0 keeps all its
	// messages); ClearRetention returns it to the hub's.
	SetRetention(ctx context.Context, device string, d time.Duration) error
	ClearRetention(ctx context.Context, device string) error
	// RunRetention runs a retention pass now (it also runs periodically).
	RunRetention(ctx context.Context) (RetentionResult, error)
}

// RetentionResult tells what one retention pass did.
type RetentionResult struct {
	// Deleted counts the messages deleted, BySize those of them deleted to
	// keep the database under its size cap.
	Deleted, BySize int64
	// Devices counts the devices that lost messages to their retention.
	Devices int
	// Took is the whole pass; LongestStep the longest single delete, the
	// most that ingestion waited for it.
	Took, LongestStep time.Duration
}

// EventLog is the log of status changes the hub observed.
type EventLog interface {
	// StatusEvents returns a device's latest status events, newest first
	// (ErrNotFound for an unknown device).
	StatusEvents(ctx context.Context, device string, limit int) ([]StatusEvent, error)
	// StaleOnline returns the devices whose status is "online" because the
	// hub saw them connect, for a hub that just started: none of those
	// connections survived the restart.
	StaleOnline(ctx context.Context) ([]string, error)
}
