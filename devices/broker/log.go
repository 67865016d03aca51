package broker

import (
	"context"
	"log/slog"
)

// mochiHandler wraps the slog handler given to mochi. mochi logs every hook
// error at ERROR with the whole packet; the hook refuses publishes on
// purpose and logs them itself, throttled per device, so that record is
// demoted to DEBUG to keep one bad device from flooding the log.
type mochiHandler struct{ slog.Handler }

func (h mochiHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "publish packet error" && r.Level == slog.LevelError {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h mochiHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return mochiHandler{h.Handler.WithAttrs(as)}
}

func (h mochiHandler) WithGroup(name string) slog.Handler {
	return mochiHandler{h.Handler.WithGroup(name)}
}
