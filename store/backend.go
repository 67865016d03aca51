// Package store holds what every storage backend of Telehub shares: the
// ingest Pipeline (a bounded queue, group commit with retry, acknowledgement
// and the live feed strictly after commit, in sequence order), the Batch and
// Backend contract a backend implements for it, and the in-memory device
// Summaries that a backend's writer and readers share.
//
// The backends are in its subpackages: store/sqlite (the embedded default)
// and store/postgres. store/storetest is the conformance suite that every
// backend passes. It imports the devices package only.
package store

import (
	"context"

	"github.com/telehub/telehub/devices"
)

// Batch is one transaction of messages, begun by Backend.Begin. The
// Pipeline appends messages, then either commits or rolls back; a Batch is
// never reused after that (the contract of Prometheus's storage.Appender).
type Batch interface {
	// Append adds m to the transaction. The backend may write it at once or
	// at Commit; m stays the Pipeline's and unchanged until Commit or
	// Rollback returns. An error makes the Pipeline roll back.
	Append(ctx context.Context, m *devices.Message) error
	// Commit makes every appended message durable before it returns, and
	// sets each one's Seq: dense, increasing in append order, and above
	// every Seq of a batch committed before (so that a reader that follows
	// seq > last never misses a row that becomes visible later). On error
	// nothing of the batch is stored, and the backend's in-memory state is
	// as if the batch had never begun.
	Commit(ctx context.Context) error
	// Rollback discards the batch; after a failed Append or Commit it is
	// still called, and must then do nothing harmful.
	Rollback(ctx context.Context) error
}

// Backend is what a storage backend gives the Pipeline. The Pipeline calls
// every method from its write loop, one at a time.
type Backend interface {
	// Begin starts a batch. The Pipeline holds at most one at a time. A
	// batch with no message appended is how a backend's own work rides on
	// a commit (Pipeline.CommitEmpty).
	Begin(ctx context.Context) (Batch, error)
	// AfterBatch runs after each batch of messages is committed and handed
	// to the dispatcher: a place for small steps of background work.
	AfterBatch(ctx context.Context)
	// Drain runs once at shutdown, after the last batch of accepted
	// messages: save what memory holds.
	Drain(ctx context.Context)
}
