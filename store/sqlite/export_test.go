package sqlite

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
	return w.Run(ctx, func() error { return w.flushRollups(ctx) })
}

// RollupRoundStep begins a rollup round unless one is under way, then
// writes its next step, on the write loop; it reports whether the round is
// still under way.
func (w *Writer) RollupRoundStep(ctx context.Context) (bool, error) {
	var more bool
	err := w.Run(ctx, func() error {
		if w.roll.round == nil {
			if err := w.startRollupRound(ctx); err != nil {
				return err
			}
		}
		err := w.rollupStep(ctx)
		more = w.roll.round != nil
		return err
	})
	return more, err
}
