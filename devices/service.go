package devices

import "context"

// Pending is a message on its way to disk. Whoever takes it from MQTT (the
// embedded broker's hook or the external-broker subscriber) fills Message and
// Done and hands it to a MessageWriter.
type Pending struct {
	Message Message
	// Done is called exactly once, in commit order, after the message was
	// committed (err nil, Message.Seq set) or could not be (err non-nil). It
	// runs on the writer's dispatch goroutine: it must not block for long.
	// Nil means nobody waits.
	Done func(m *Message, err error)
}

// MessageWriter stores messages durably, in the order it accepts them.
// Both methods refuse, before queueing, a message whose metric names break
// the store's limits: ErrMetricName for a name that is too long,
// ErrTooManyMetrics for names that would take the device past its cap.
type MessageWriter interface {
	// Write queues p, waiting while the queue is full (back-pressure) until
	// ctx is done. It returns ErrClosed once the writer is closing.
	Write(ctx context.Context, p *Pending) error
	// TryWrite queues p only if there is room now; otherwise it returns
	// ErrQueueFull. It returns ErrClosed once the writer is closing.
	TryWrite(p *Pending) error
}

// MessageFilter selects stored messages.
type MessageFilter struct {
	// Device limits the result to one device; "" means all devices.
	Device string
	// From and To bound the message timestamp TS, Unix ms, inclusive; 0 is
	// the epoch like any other time. MinTime and MaxTime leave that side
	// unbounded (AllTime sets both).
	From, To int64
	// Limit caps the number of messages returned; it must be positive.
	Limit int
	// Desc orders newest first; otherwise oldest first (by TS, then Seq).
	Desc bool
	// After, when set, continues a listing after this position in the
	// requested order (keyset pagination): the TS and Seq of the last
	// message of the previous page.
	After *Position
	// ByReceived makes From and To bound the receive time instead, and
	// orders by arrival (Seq); After then needs only its Seq.
	ByReceived bool
}

// Position is a message's place in TS order, ties broken by Seq.
type Position struct {
	TS  int64
	Seq Seq
}

// MessageService reads stored messages and devices.
type MessageService interface {
	// FindDevice returns one device, or ErrNotFound.
	FindDevice(ctx context.Context, id string) (*Device, error)
	// ListDevices returns every device ordered by id.
	ListDevices(ctx context.Context) ([]*Device, error)
	// ListMessages returns messages matching f. It returns ErrInvalid for a
	// bad filter and ErrNotFound when f.Device names no device.
	ListMessages(ctx context.Context, f MessageFilter) ([]Message, error)
	// Series returns numeric series of one device. It returns ErrInvalid
	// for a bad query and ErrNotFound for an unknown device.
	Series(ctx context.Context, q SeriesQuery) (*Series, error)
	// Replay calls fn for every stored message with after < Seq <= upTo,
	// of one device or of all (device ""), and stops at fn's first error,
	// which it returns. Messages come in sequence order, each exactly once.
	// An unknown device replays nothing.
	Replay(ctx context.Context, device string, after, upTo Seq, fn func(*Message) error) error
	// LastSeq returns the highest sequence number committed so far.
	LastSeq() Seq
}

// DataDeleter removes stored data. Deletes go through the single writer, a
// chunk at a time, so they never hold up ingestion for long.
type DataDeleter interface {
	// DeleteDevice deletes a device and every message of it, and returns how
	// many messages went. It returns ErrNotFound for an unknown device.
	DeleteDevice(ctx context.Context, id string) (int64, error)
	// DeleteMessages deletes a device's messages with from <= TS <= to
	// (0 means unbounded) and returns how many went. It returns ErrNotFound
	// for an unknown device.
	DeleteMessages(ctx context.Context, id string, from, to int64) (int64, error)
}
