package devices

import (
	"sync"
	"sync/atomic"
)

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
	// ReasonNotAuthorized: the device may not publish to that topic.
	ReasonNotAuthorized Reason = "not_authorized"
	// ReasonRateLimited: the device published faster than its allowed rate.
	ReasonRateLimited Reason = "rate_limited"
	// ReasonReservedTopic: a client published to a topic starting with '$'
	// ($SYS and the like), which belong to the broker.
	ReasonReservedTopic Reason = "reserved_topic"
	// ReasonTooManyMetrics: the message would give its device more metric
	// names than the hub keeps per device (store.Pipeline.MaxMetrics).
	ReasonTooManyMetrics Reason = "too_many_metrics"
	// ReasonMetricName: a metric name is longer than the hub accepts
	// (store.Pipeline.MaxMetricName).
	ReasonMetricName Reason = "metric_name_too_long"
)

// Reasons lists every Reason, for exporting counters. Stats sizes its
// counters from it, so adding one here is all it takes.
var Reasons = [...]Reason{ReasonTooLarge, ReasonInvalidTopic, ReasonQueueFull, ReasonStoreError, ReasonShuttingDown,
	ReasonNotAuthorized, ReasonRateLimited, ReasonReservedTopic, ReasonTooManyMetrics, ReasonMetricName}

// Refusal names why a connection or request was turned away.
type Refusal string

// Refusals of connections and requests.
const (
	// RefusedBadCredentials: an MQTT client without valid credentials.
	RefusedBadCredentials Refusal = "mqtt_bad_credentials"
	// RefusedTooManyConnections: the broker was at its connection limit.
	RefusedTooManyConnections Refusal = "mqtt_too_many_connections"
	// RefusedSubscribe: a device subscribed to a topic it may not read.
	RefusedSubscribe Refusal = "mqtt_subscribe_not_authorized"
	// RefusedHTTPUnauthorized: an API request without a valid token.
	RefusedHTTPUnauthorized Refusal = "http_unauthorized"
	// RefusedHTTPForbidden: an API request whose token lacks the scope.
	RefusedHTTPForbidden Refusal = "http_forbidden"
	// RefusedWSOrigin: a WebSocket handshake from a foreign origin.
	RefusedWSOrigin Refusal = "ws_origin"
	// RefusedWSTooMany: a WebSocket handshake beyond the client limit.
	RefusedWSTooMany Refusal = "ws_too_many_clients"
	// RefusedHTTPHost: a request for a Host that is not one of the hub's
	// names (DNS rebinding).
	RefusedHTTPHost Refusal = "http_host_not_allowed"
	// RefusedHTTPCrossOrigin: a request that changes something, sent by a
	// page of another origin.
	RefusedHTTPCrossOrigin Refusal = "http_cross_origin"
)

// Refusals lists every Refusal, for exporting counters.
var Refusals = [...]Refusal{RefusedBadCredentials, RefusedTooManyConnections, RefusedSubscribe,
	RefusedHTTPUnauthorized, RefusedHTTPForbidden, RefusedWSOrigin, RefusedWSTooMany, RefusedHTTPHost, RefusedHTTPCrossOrigin}

// maxDeniedDevices bounds the per-device count of unauthorised publishes, so
// that a flood of made-up ids cannot grow it without limit.
const maxDeniedDevices = 1000

// Stats counts what ingestion saw. Its methods are safe for concurrent use;
// the zero value is ready.
type Stats struct {
	received atomic.Int64
	stored   atomic.Int64
	flagged  atomic.Int64
	rejected [len(Reasons)]atomic.Int64  // indexed like Reasons
	refused  [len(Refusals)]atomic.Int64 // indexed like Refusals

	mu     sync.Mutex
	denied map[string]int64 // unauthorised publishes by authenticated device
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

// Denied counts a publish refused as not authorised, by the device that
// tried it ("" when it was not authenticated), besides Rejected.
func (s *Stats) Denied(device string) {
	s.Rejected(ReasonNotAuthorized)
	if device == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denied == nil {
		s.denied = make(map[string]int64)
	}
	if _, ok := s.denied[device]; ok || len(s.denied) < maxDeniedDevices {
		s.denied[device]++
	}
}

// Refused counts a connection or request turned away, by reason.
func (s *Stats) Refused(r Refusal) {
	for i, x := range Refusals {
		if x == r {
			s.refused[i].Add(1)
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
	// Refused counts connections and requests turned away.
	Refused map[Refusal]int64 `json:"refused"`
	// DeniedByDevice counts unauthorised publishes per authenticated
	// device (at most 1,000 devices are tracked).
	DeniedByDevice map[string]int64 `json:"denied_by_device"`
}

// Snapshot returns the current counters.
func (s *Stats) Snapshot() Snapshot {
	out := Snapshot{
		Received:       s.received.Load(),
		Stored:         s.stored.Load(),
		Flagged:        s.flagged.Load(),
		Rejected:       make(map[Reason]int64, len(Reasons)),
		Refused:        make(map[Refusal]int64, len(Refusals)),
		DeniedByDevice: map[string]int64{},
	}
	for i, r := range Reasons {
		out.Rejected[r] = s.rejected[i].Load()
	}
	for i, r := range Refusals {
		out.Refused[r] = s.refused[i].Load()
	}
	s.mu.Lock()
	for d, n := range s.denied {
		out.DeniedByDevice[d] = n
	}
	s.mu.Unlock()
	return out
}
