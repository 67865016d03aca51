package simulator

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Percentiles summarises a latency distribution, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	// N is how many samples were taken.
	N int64 `json:"n"`
}

// Report is what a run measured. Lost, Duplicated and Reordered are only
// meaningful with Verify.
type Report struct {
	// Devices is the fleet size; Connects counts successful connections
	// (reconnects included) and Disconnects lost connections.
	Devices     int   `json:"devices"`
	Connects    int64 `json:"connects"`
	Disconnects int64 `json:"disconnects"`
	// NeverConnected counts devices that tried and never got connected
	// (broker down, credentials refused): the run then fails.
	NeverConnected int64 `json:"never_connected"`
	// Sent counts published messages; Acked those acknowledged (QoS 1, 2);
	// Errors those that were not (connection lost, timeout); Skipped the
	// ticks when the device was not connected.
	Sent    int64 `json:"sent"`
	Acked   int64 `json:"acked"`
	Errors  int64 `json:"errors"`
	Skipped int64 `json:"skipped"`
	// Stored counts distinct sent messages found in the hub's database;
	// ReceivedLive those its WebSocket pushed while the run went on.
	Stored       int64 `json:"stored"`
	ReceivedLive int64 `json:"received_live"`
	// Lost counts acknowledged messages the hub does not have; Duplicated
	// extra copies (stored twice, or pushed twice); Reordered live messages
	// that came after a later one of the same device.
	Lost       int64 `json:"lost"`
	Duplicated int64 `json:"duplicated"`
	Reordered  int64 `json:"reordered"`
	// Seconds is the publishing time; Rate the achieved messages per second.
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	// AckLatency is publish to PUBACK; E2ELatency publish to the WebSocket
	// frame (Verify only).
	AckLatency Percentiles `json:"ack_latency_ms"`
	E2ELatency Percentiles `json:"e2e_latency_ms"`
	// Commands is what Config.CommandRate measured (nil without it);
	// AttributesApplied counts shared-attribute updates devices applied.
	Commands          *CommandReport `json:"commands,omitempty"`
	AttributesApplied int64          `json:"attributes_applied"`
}

// maxSamples bounds a recorder's memory; beyond it samples are kept with
// equal probability (reservoir sampling).
const maxSamples = 2_000_000

// recorder collects latency samples from many goroutines.
type recorder struct {
	mu  sync.Mutex
	us  []uint32
	n   int64
	rng *rand.Rand
}

func newRecorder() *recorder { return &recorder{rng: rand.New(rand.NewPCG(1, 2))} }

func (r *recorder) add(d time.Duration) {
	us := uint32(min(max(d.Microseconds(), 0), 1<<32-1))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if len(r.us) < maxSamples {
		r.us = append(r.us, us)
	} else if i := r.rng.Int64N(r.n); i < maxSamples {
		r.us[i] = us
	}
}

func (r *recorder) percentiles() Percentiles {
	r.mu.Lock()
	s := slices.Clone(r.us)
	n := r.n
	r.mu.Unlock()
	if len(s) == 0 {
		return Percentiles{}
	}
	slices.Sort(s)
	at := func(p float64) float64 { return float64(s[min(len(s)-1, int(p*float64(len(s))))]) / 1000 }
	return Percentiles{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: float64(s[len(s)-1]) / 1000, N: n}
}
