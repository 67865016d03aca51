package devices

import "sync/atomic"

// Reason names why a message was not stored, for counters and logs.
type Reason string

// Reasons a publish is refused or dropped.
const (
	// ReasonTooLarge: the payload exceeds the configured limit.
	ReasonTooLarge Reason = "payload_too_large"
	// ReasonInvalidTopic: the topic has the scheme's shape but no valid device id.
	ReasonInvalidTopic Reason = "invalid_topic"
	// ReasonQueueFull: a QoS 0 message met a full ingest queue and was dropped.
	ReasonQueueFull Reason = "queue_full"
	// ReasonStoreError: the store failed to commit; QoS 1 and 2 are not acknowledged.
	ReasonStoreError Reason = "store_error"
	// ReasonShuttingDown: the hub was stopping; QoS 1 and 2 are not acknowledged and will be resent.
	ReasonShuttingDown Reason = "shutting_down"
)

// Reasons lists every Reason, for exporting counters.
var Reasons = []Reason{ReasonTooLarge, ReasonInvalidTopic, ReasonQueueFull, ReasonStoreError, ReasonShuttingDown}

// Stats counts what ingestion saw. Its methods are safe for concurrent use;
// the zero value is ready.
type Stats struct {
	received atomic.Int64
	stored   atomic.Int64
	flagged  atomic.Int64
	rejected [5]atomic.Int64 // indexed like Reasons
}

// Received counts a publish taken from MQTT on a scheme topic.
func (s *Stats) Received() { s.received.Add(1) }

// Stored counts n committed messages, of which flagged carried decoder flags.
func (s *Stats) Stored(n, flagged int) {
	s.stored.Add(int64(n))
	s.flagged.Add(int64(flagged))
}

// Rejected counts a message that was not stored, by reason.
func (s *Stats) Rejected(r Reason) {
	for i, x := range Reasons {
		if x == r {
			s.rejected[i].Add(1)
			return
		}
	}
}

// Snapshot is a copy of the counters.
type Snapshot struct {
	Received int64            `json:"received"`
	Stored   int64            `json:"stored"`
	Flagged  int64            `json:"flagged"`
	Rejected map[Reason]int64 `json:"rejected"`
}

// Snapshot returns the current counters.
func (s *Stats) Snapshot() Snapshot {
	out := Snapshot{
		Received: s.received.Load(),
		Stored:   s.stored.Load(),
		Flagged:  s.flagged.Load(),
		Rejected: make(map[Reason]int64, len(Reasons)),
	}
	for i, r := range Reasons {
		out.Rejected[r] = s.rejected[i].Load()
	}
	return out
}
