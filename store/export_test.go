package store

import "context"

// Internals exposed to the tests.
var (
	MessagesQuery = messagesQuery
	ReplayQuery   = replayQuery
	ReplayFarSeqs = replayFarSeqs
	SeriesRaw     = (*MessageService).seriesRaw
)

// FlushRollups writes the pending rollup deltas now, on the write loop.
func (w *Writer) FlushRollups(ctx context.Context) error {
	return w.run(ctx, func() error { return w.flushRollups(ctx) })
}
