package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// mochiHandler wraps the slog handler given to mochi. It never lets a
// packet reach the log whole (a CONNECT holds the password or token, a
// PUBLISH the device's data): packets are logged as type, topic and id. And
// it demotes two kinds of record to DEBUG: mochi logs every hook error at ERROR with the whole
// packet (the hook refuses publishes on purpose and logs them itself,
// throttled per device), and every closed connection (EOF, reset, or closed
// by the broker at shutdown) as a WARN with an empty message. Other
// connections that end in an error (a refused CONNECT, a malformed packet)
// are logged at most once a minute per error, with a message.
type mochiHandler struct {
	slog.Handler
	throttle *devices.Throttle
}

func (h mochiHandler) Handle(ctx context.Context, r slog.Record) error {
	if (r.Message == "publish packet error" && r.Level == slog.LevelError) || isDisconnectWarning(r) {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	} else if r.Message == "" {
		key := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				key = a.Value.String()
			}
			return key == ""
		})
		ok, suppressed := h.throttle.Allow(key, r.Time)
		if !ok {
			return nil
		}
		r = scrub(r)
		out := slog.NewRecord(r.Time, r.Level, "client connection ended", r.PC)
		r.Attrs(func(a slog.Attr) bool { out.AddAttrs(a); return true })
		out.AddAttrs(slog.Int("suppressed_since_last", suppressed))
		return h.Handler.Handle(ctx, out)
	}
	return h.Handler.Handle(ctx, scrub(r))
}

// scrub returns r with every packets.Packet attribute reduced to a summary.
func scrub(r slog.Record) slog.Record {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if pk, ok := a.Value.Any().(packets.Packet); ok {
			a = slog.Group(a.Key, "type", packets.PacketNames[pk.FixedHeader.Type], "topic", pk.TopicName, "id", pk.PacketID)
		}
		out.AddAttrs(a)
		return true
	})
	return out
}

func isDisconnectWarning(r slog.Record) bool {
	if r.Level != slog.LevelWarn || r.Message != "" {
		return false
	}
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "error" {
			found = errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
		}
		return !found
	})
	return found
}

func (h mochiHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return mochiHandler{h.Handler.WithAttrs(as), h.throttle}
}

func (h mochiHandler) WithGroup(name string) slog.Handler {
	return mochiHandler{h.Handler.WithGroup(name), h.throttle}
}
