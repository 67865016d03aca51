package dashboard

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/telehub/telehub/devices"
)

// maxResyncs is how often a client may fall behind within resyncWindow before
// it is disconnected as too slow.
const (
	maxResyncs   = 5
	resyncWindow = time.Minute
)

// wsOptions are the parsed query parameters of /api/v1/ws.
type wsOptions struct {
	device string      // "" streams all devices
	since  devices.Seq // replay messages after this sequence number
	replay bool        // false: live only, from the current sequence number
	batch  bool        // several messages per frame
	events bool        // status, command, attribute and alert frames only, no messages
}

// Limits of one batched frame.
const (
	maxBatchMessages = 1000
	maxBatchBytes    = 256 << 10
)

// handleWSUpgrade validates the request before the upgrade, so that a bad
// parameter or a foreign Origin gets an HTTP error instead of a socket.
//
// Query parameters: device (optional, one device id), since (optional,
// replay everything after this sequence number; absent means live only),
// batch (optional, "1" or "true": several messages per frame), events
// (optional, "1" or "true": only status, command, attribute and alert
// frames, no messages and no replay: what the alerts view listens to).
func (s *Server) handleWSUpgrade(c *fiber.Ctx) error {
	if !websocket.IsWebSocketUpgrade(c) {
		return fiber.NewError(fiber.StatusUpgradeRequired, "this endpoint speaks WebSocket")
	}
	if !s.originAllowed(c) {
		s.Stats.Refused(devices.RefusedWSOrigin)
		return fiber.NewError(fiber.StatusForbidden, "origin not allowed")
	}
	if s.WSClients() >= s.WSMaxClients {
		s.Stats.Refused(devices.RefusedWSTooMany)
		c.Set(fiber.HeaderRetryAfter, "5")
		return fiber.NewError(fiber.StatusServiceUnavailable, "too many WebSocket clients; try again later")
	}
	var o wsOptions
	if d := c.Query("device"); d != "" {
		if err := devices.ValidateDeviceID(d); err != nil {
			return invalid("device", "%s", strings.TrimPrefix(err.Error(), devices.ErrInvalid.Error()+": "))
		}
		o.device = utils.CopyString(d)
	}
	if v := c.Query("since"); v != "" {
		n, err := intParam("since", v, 0, 0, 1<<62)
		if err != nil {
			return err
		}
		o.since, o.replay = devices.Seq(n), true
	}
	switch v := c.Query("batch"); v {
	case "", "0", "false":
	case "1", "true":
		o.batch = true
	default:
		return invalid("batch", "want 1, true, 0 or false, got %q", v)
	}
	switch v := c.Query("events"); v {
	case "", "0", "false":
	case "1", "true":
		o.events, o.replay = true, false
	default:
		return invalid("events", "want 1, true, 0 or false, got %q", v)
	}
	c.Locals("ws", o)
	return c.Next()
}

func (s *Server) wsHandler() fiber.Handler {
	return websocket.New(s.serveWS, websocket.Config{
		Origins:          []string{"*"}, // checked in handleWSUpgrade
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  16 << 10,
	})
}

// serveWS streams history then live messages to one client. It subscribes to
// the Feed first, then reads the committed sequence number S and replays
// from the database every message after the client's position up to S, then
// sends live messages above S. Nothing is missed: a message above S was
// committed after S was read, so after the subscription, so it reaches the
// subscription. Nothing is sent twice: live messages at or below S are
// skipped. When the subscription overflows, the client is resynchronised
// from the database the same way, from the last message it was sent.
func (s *Server) serveWS(conn *websocket.Conn) {
	s.wsMu.Lock()
	if s.wsClosing {
		s.wsMu.Unlock()
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		conn.Close()
		return
	}
	s.wsN++
	s.wsMu.Unlock()
	defer func() {
		// The connection was hijacked from the HTTP server, past Fiber's
		// recover middleware: a bug here must close this client only.
		if e := recover(); e != nil {
			s.Logger.Error("websocket handler panicked", "panic", fmt.Sprint(e), "stack", string(debug.Stack()))
		}
		s.wsMu.Lock()
		if s.wsN--; s.wsN == 0 && s.wsIdle != nil {
			close(s.wsIdle)
			s.wsIdle = nil
		}
		s.wsMu.Unlock()
	}()

	o, _ := conn.Locals("ws").(wsOptions)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()

	// The client sends nothing we need; read to process control frames and
	// to notice when it goes away. The reader uses the underlying connection
	// and is waited for: contrib/websocket recycles conn when serveWS returns.
	raw := conn.Conn
	raw.SetReadLimit(4 << 10)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer cancel()
		for {
			typ, msg, err := raw.ReadMessage()
			if err != nil {
				return
			}
			if typ == websocket.TextMessage && !utf8.Valid(msg) { // RFC 6455 8.1
				raw.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInvalidFramePayloadData, "text frame is not UTF-8"), time.Now().Add(time.Second))
				return
			}
		}
	}()
	defer func() {
		// fasthttp closes a hijacked connection only after this handler
		// returns, so Close does not wake the reader; a past deadline does.
		raw.SetReadDeadline(time.Now())
		<-readerDone
	}()

	st := &wsStream{s: s, conn: conn, opts: o}
	code, reason := st.run(ctx)
	if code != 0 {
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	}
	conn.Close()
}

type wsStream struct {
	s    *Server
	conn *websocket.Conn
	opts wsOptions
	last devices.Seq
	buf  []byte
	n    int // messages in buf, in batch mode
}

// run streams until the client leaves or the server closes, and returns the
// close code and reason to send (0 when the connection is already gone).
func (st *wsStream) run(ctx context.Context) (int, string) {
	var resyncs []time.Time
	st.last = st.opts.since
	first := true
	for {
		subscribe := st.s.Feed.Subscribe
		if st.opts.device != "" {
			subscribe = func(buf int) (*devices.Subscription, error) { return st.s.Feed.SubscribeDevice(st.opts.device, buf) }
		}
		sub, err := subscribe(st.s.WSQueue)
		if err != nil {
			return websocket.CloseGoingAway, "server shutting down"
		}
		upTo := st.s.Messages.LastSeq() // read after subscribing: see serveWS
		if first && !st.opts.replay {
			st.last = upTo
		} else if st.last > upTo {
			// The client's position is past this database (restored from a
			// backup, or a fresh one): it must reload, or it would skip
			// every message up to its old position.
			if err := st.reset(upTo); err != nil {
				sub.Close()
				return st.closeFor(ctx, err)
			}
		} else if err := st.s.Messages.Replay(ctx, st.opts.device, st.last, upTo, st.writeMessage); errors.Is(err, devices.ErrInvalid) {
			// Too far behind to replay (sqlite.ReplayFarLimit, checked before
			// anything is sent): reload.
			if err := st.reset(upTo); err != nil {
				sub.Close()
				return st.closeFor(ctx, err)
			}
		} else if err != nil {
			sub.Close()
			return st.closeFor(ctx, err)
		} else if err := st.flush(); err != nil {
			sub.Close()
			return st.closeFor(ctx, err)
		}
		st.last = max(st.last, upTo)
		if first {
			if err := st.writeControl("replay_end"); err != nil {
				sub.Close()
				return st.closeFor(ctx, err)
			}
			first = false
		}
		err = st.live(ctx, sub)
		sub.Close()
		if !errors.Is(err, devices.ErrLagged) {
			return st.closeFor(ctx, err)
		}
		now := time.Now()
		resyncs = append(resyncs, now)
		for len(resyncs) > 0 && now.Sub(resyncs[0]) > resyncWindow {
			resyncs = resyncs[1:]
		}
		st.s.wsResyncs.Add(1)
		if len(resyncs) > maxResyncs {
			st.s.wsSlow.Add(1)
			return websocket.ClosePolicyViolation, "client too slow: fell behind the live feed repeatedly"
		}
		if err := st.writeControl("resync"); err != nil {
			return st.closeFor(ctx, err)
		}
	}
}

func (st *wsStream) closeFor(ctx context.Context, err error) (int, string) {
	switch {
	case errors.Is(err, devices.ErrClosed) || st.s.ctx.Err() != nil:
		return websocket.CloseGoingAway, "server shutting down"
	case ctx.Err() != nil:
		return 0, "" // the client left
	case isTimeout(err):
		st.s.wsSlow.Add(1) // did not read for WSWriteTimeout
		return 0, ""
	default:
		st.s.Logger.Debug("websocket ended", "error", err)
		return websocket.CloseInternalServerErr, "stream error"
	}
}

// live sends committed messages until the subscription ends or ctx is done.
func (st *wsStream) live(ctx context.Context, sub *devices.Subscription) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case batch, ok := <-sub.C():
			if !ok {
				return sub.Err()
			}
			for i := range batch {
				m := &batch[i]
				if st.opts.device != "" && m.Device != st.opts.device {
					continue
				}
				if m.Seq == 0 { // a status event or a command: not a stored message, no seq
					write := st.writeStatus
					switch m.Kind {
					case devices.KindCommand:
						write = st.writeCommand
					case devices.KindAttributes:
						write = st.writeAttributes
					case devices.KindAlert:
						write = st.writeAlert
					}
					if err := write(m); err != nil {
						return err
					}
					continue
				}
				if m.Seq <= st.last || st.opts.events {
					continue
				}
				if err := st.writeMessage(m); err != nil {
					return err
				}
				st.last = m.Seq
			}
			if err := st.flush(); err != nil {
				return err
			}
		}
	}
}

// writeMessage sends m as its own frame or, in batch mode, adds it to the
// pending batch frame, which is sent when full and by flush.
func (st *wsStream) writeMessage(m *devices.Message) error {
	if st.opts.batch {
		if st.n == 0 {
			st.buf = append(st.buf[:0], `{"type":"messages","messages":[`...)
		} else {
			st.buf = append(st.buf, ',')
		}
		st.buf = m.AppendJSON(st.buf)
		if st.n++; st.n >= maxBatchMessages || len(st.buf) >= maxBatchBytes {
			return st.flush()
		}
		return nil
	}
	b := append(st.buf[:0], `{"type":"message",`...)
	b = m.AppendJSON(b)
	// AppendJSON wrote its own '{'; drop it to merge the two objects.
	i := len(`{"type":"message",`)
	b = append(b[:i], b[i+1:]...)
	st.buf = b
	return st.write(b)
}

// flush sends the pending batch frame, if any.
func (st *wsStream) flush() error {
	if st.n == 0 {
		return nil
	}
	st.buf = append(st.buf, "]}"...)
	st.n = 0
	return st.write(st.buf)
}

// writeStatus sends a status event (devices.StatusEvent.FeedMessage) as
// {"type":"status","device":..,"at":..,"status":..,"reason":..}.
func (st *wsStream) writeStatus(m *devices.Message) error {
	if err := st.flush(); err != nil {
		return err
	}
	b := append(st.buf[:0], `{"type":"status","device":`...)
	b = strconv.AppendQuote(b, m.Device)
	b = append(b, `,"at":`...)
	b = strconv.AppendInt(b, m.Received, 10)
	b = append(b, ',')
	b = append(b, m.Payload[1:]...) // the payload object's members
	st.buf = b
	return st.write(b)
}

// writeCommand sends a command's change (devices.Command.FeedMessage) as
// {"type":"command","command":{...}}.
func (st *wsStream) writeCommand(m *devices.Message) error {
	return st.writeEvent(`{"type":"command","command":`, m)
}

// writeAlert sends an alert's change (devices.Alert.FeedMessage) as
// {"type":"alert","alert":{...}}.
func (st *wsStream) writeAlert(m *devices.Message) error {
	return st.writeEvent(`{"type":"alert","alert":`, m)
}

// writeAttributes sends an attribute change (devices.AttributeEvent) as
// {"type":"attributes","event":{"device","scope","at","changed"}}.
func (st *wsStream) writeAttributes(m *devices.Message) error {
	return st.writeEvent(`{"type":"attributes","event":`, m)
}

// writeEvent sends a frame of head, then m's JSON payload, then '}'.
func (st *wsStream) writeEvent(head string, m *devices.Message) error {
	if err := st.flush(); err != nil {
		return err
	}
	b := append(st.buf[:0], head...)
	b = append(b, m.Payload...)
	b = append(b, '}')
	st.buf = b
	return st.write(b)
}

// reset tells the client that the hub cannot continue from its position:
// {"type":"reset","seq":N}. It must drop what it holds and reload history up
// to N; live messages above N follow.
func (st *wsStream) reset(upTo devices.Seq) error {
	st.last = upTo
	return st.writeControl("reset")
}

func (st *wsStream) writeControl(typ string) error {
	b := append(st.buf[:0], `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, int64(st.last), 10)
	b = append(b, '}')
	st.buf = b
	return st.write(b)
}

func (st *wsStream) write(b []byte) error {
	st.conn.SetWriteDeadline(time.Now().Add(st.s.WSWriteTimeout))
	return st.conn.WriteMessage(websocket.TextMessage, b)
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
