package store

import (
	"log/slog"
	"time"

	"github.com/telehub/telehub/devices"
)

// Options are the settings the hub gives any backend when it opens one.
// Zero values take the defaults.
type Options struct {
	// MaxBatch, QueueSize, MaxMetrics and MaxMetricName set the Pipeline
	// fields of the same names.
	MaxBatch      int
	QueueSize     int
	MaxMetrics    int
	MaxMetricName int
	// Linger is Pipeline.Linger, taken as it is: 0 commits at once
	// (DefaultLinger is the hub's default).
	Linger time.Duration
	// Retention deletes messages whose ts is older than this (devices may
	// override it); 0 keeps everything.
	Retention time.Duration
	// MaxDBSize, when positive, caps the bytes the database uses, where the
	// backend can tell (SQLite); the oldest messages go first.
	MaxDBSize int64
	// OnCommit receives each committed batch in sequence order (the live
	// feed); OnStatus each recorded status event. Optional.
	OnCommit func([]devices.Message)
	OnStatus func(devices.StatusEvent)
	// Observe is told the size and duration of every commit. Optional.
	Observe func(rows int, d time.Duration)
	// Stats counts stored and refused messages. Optional.
	Stats *devices.Stats
	// Logger is the backend's logger; components add their names.
	Logger *slog.Logger
}

// Configure sets p's fields from o; zero values keep p's.
func (o *Options) Configure(p *Pipeline) {
	setIf(&p.MaxBatch, o.MaxBatch)
	setIf(&p.QueueSize, o.QueueSize)
	setIf(&p.MaxMetrics, o.MaxMetrics)
	setIf(&p.MaxMetricName, o.MaxMetricName)
	p.Linger = max(o.Linger, 0)
	p.OnCommit, p.Observe = o.OnCommit, o.Observe
	if o.Stats != nil {
		p.Stats = o.Stats
	}
	if o.Logger != nil {
		p.Logger = o.Logger.With("component", "writer")
	}
}

func setIf(dst *int, v int) {
	if v > 0 {
		*dst = v
	}
}
