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
	// From and To bound the message timestamp TS, Unix ms, inclusive. Zero
	// means unbounded.
	From, To int64
	// AfterSeq returns only messages with a greater sequence number (replay).
	AfterSeq Seq
	// Limit caps the number of messages returned; it must be positive.
	Limit int
	// Desc orders newest first; otherwise oldest first.
	Desc bool
	// BySeq orders by sequence number instead of timestamp.
	BySeq bool
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
	// LastSeq returns the highest sequence number committed so far.
	LastSeq() Seq
}
