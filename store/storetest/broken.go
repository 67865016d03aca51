package storetest

import (
	"context"

	"github.com/telehub/telehub/devices"
)

// Faults are the ways Broken can break a store, each one a defect the
// conformance suite must catch.
var Faults = map[string]string{
	// a cursor that skips the first message of every next page
	"cursor": "ListMessagesOrderAndCursors",
	// a replay that skips every tenth message
	"replay": "Replay",
	// deletes that leave the device's count as it was
	"count": "DeleteMessages",
}

// Broken wraps s with one of Faults: the suite's own test runs the suite on
// it and expects the named subtest to fail.
func Broken(s devices.Store, fault string) devices.Store {
	return &broken{Store: s, fault: fault}
}

type broken struct {
	devices.Store
	fault string
}

func (b *broken) ListMessages(ctx context.Context, f devices.MessageFilter) ([]devices.Message, error) {
	msgs, err := b.Store.ListMessages(ctx, f)
	if b.fault == "cursor" && f.After != nil && len(msgs) > 0 {
		msgs = msgs[1:]
	}
	return msgs, err
}

func (b *broken) Replay(ctx context.Context, device string, after, upTo devices.Seq, fn func(*devices.Message) error) error {
	if b.fault != "replay" {
		return b.Store.Replay(ctx, device, after, upTo, fn)
	}
	return b.Store.Replay(ctx, device, after, upTo, func(m *devices.Message) error {
		if m.Seq%10 == 0 {
			return nil
		}
		return fn(m)
	})
}

func (b *broken) FindDevice(ctx context.Context, id string) (*devices.Device, error) {
	d, err := b.Store.FindDevice(ctx, id)
	if b.fault == "count" && err == nil {
		d.MessageCount = int64(d.LastSeq) // as if nothing was ever deleted
	}
	return d, err
}
