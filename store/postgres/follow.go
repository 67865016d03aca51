package postgres

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// Several hubs can share one database. What each hub's readers and live
// feed see comes from the follower, not from the hub's own commits: it
// reads every hub's committed messages in sequence order (seq > last; the
// counter row makes commits visible in seq order, so this never skips a
// row that shows up later), folds them into the device summaries and hands
// them to the live feed (Writer.OnCommit). The hub's own commits are
// applied by the writer right after COMMIT, before their PUBACKs, with
// their values decoded already (what others committed before them is read
// back first), so that a device or a script that got its acknowledgement
// reads its own write; others' commits the follower reads back, woken by
// NOTIFY telehub_commit from the committing transaction, or by a poll when
// a notification is lost. followMu keeps the two in order.
//
// One hub at a time, the one holding an advisory lock, saves the
// summaries and runs retention; when it dies its session ends and the
// next hub to ask takes over.

const (
	// notifyChannel is the channel every commit of messages notifies.
	notifyChannel = "telehub_commit"
	// downlinkChannel tells every hub of a new command or a change of
	// shared attributes, for the hub whose broker holds the device.
	downlinkChannel = "telehub_downlink"
	// followPoll is how long the follower waits for a notification before
	// it looks anyway.
	followPoll = 500 * time.Millisecond
	// followPage is how many messages one read of the follower takes.
	followPage = 5000
	// leaderLock is the advisory lock of the hub that saves summaries and
	// runs retention ("THUL").
	leaderLock = 0x5448554c
)

// committed is one of this hub's commits, for the follower's position.
type committed struct {
	msgs []devices.Message
	ids  []int64 // device row ids
}

// follow runs until ctx ends.
func (w *Writer) follow(ctx context.Context) {
	defer close(w.followDone)
	var listen *pgxpool.Conn
	defer func() {
		if listen != nil {
			listen.Release()
		}
	}()
	type woken struct {
		n   *pgconn.Notification
		err error
	}
	others := func() {
		w.followMu.Lock()
		err := w.readOthers(ctx, 0)
		w.followMu.Unlock()
		if err != nil && ctx.Err() == nil {
			w.Logger.Warn("following committed messages failed; retrying", "error", err)
		}
	}
	others() // what was committed between load and now
	for ctx.Err() == nil {
		if listen == nil {
			if c, err := w.DB.Pool.Acquire(ctx); err == nil {
				if _, err := c.Exec(ctx, "LISTEN "+notifyChannel+"; LISTEN "+downlinkChannel); err != nil {
					c.Release()
				} else {
					listen = c
					others() // what was committed while not listening
				}
			}
		}
		if listen == nil {
			select {
			case <-time.After(followPoll):
				others()
			case <-ctx.Done():
			}
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, followPoll)
		n, err := listen.Conn().WaitForNotification(wctx)
		cancel()
		r := woken{n, err}
		switch {
		case r.err == nil && r.n.Channel == downlinkChannel:
			w.downlinkNotified(r.n.Payload)
		case r.err == nil:
			if r.n.Payload != w.hubID { // another hub committed
				others()
			}
		case errors.Is(r.err, context.DeadlineExceeded):
			others() // the poll: a notification may have been lost
		case errors.Is(r.err, context.Canceled):
		default:
			listen.Release() // the connection broke: listen again
			listen = nil
		}
	}
}

// takeLocal applies one of this hub's commits: what others committed
// before it first, read back, then its messages as they are. Under
// followMu.
func (w *Writer) takeLocal(ctx context.Context, b committed) {
	if len(b.msgs) == 0 {
		return
	}
	first := int64(b.msgs[0].Seq)
	if int64(w.sums.Seq()) >= first {
		return // read back already
	}
	if err := w.readOthers(ctx, first); err != nil {
		w.Logger.Warn("following committed messages failed; retrying", "error", err)
		return // the poll reads them back later, these included
	}
	if int64(w.sums.Seq()) != first-1 {
		return
	}
	w.apply(b.msgs, b.ids)
}

// readOthers reads the messages above the follower's position (below
// upTo, when not 0) and applies them. Under followMu.
func (w *Writer) readOthers(ctx context.Context, upTo int64) error {
	for {
		last := int64(w.sums.Seq())
		if upTo > 0 && last >= upTo-1 {
			return nil
		}
		q := `SELECT m.seq, m.device_id, d.name, m.topic, m.ts, m.received, m.kind, m.qos, m.flags, m.payload
			FROM messages m JOIN devices d ON d.id = m.device_id WHERE m.seq > $1`
		args := []any{last}
		if upTo > 0 {
			q += ` AND m.seq < $2 ORDER BY m.seq LIMIT $3`
			args = append(args, upTo, followPage)
		} else {
			q += ` ORDER BY m.seq LIMIT $2`
			args = append(args, followPage)
		}
		rows, err := w.DB.Pool.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		var msgs []devices.Message
		var ids []int64
		for rows.Next() {
			var m devices.Message
			var id int64
			var kind, qos int16
			var flags int32
			if err := rows.Scan(&m.Seq, &id, &m.Device, &m.Topic, &m.TS, &m.Received, &kind, &qos, &flags, &m.Payload); err != nil {
				rows.Close()
				return err
			}
			m.Kind, m.QoS, m.Flags = devices.Kind(kind), byte(qos), devices.Flags(flags)
			if m.Kind == devices.KindTelemetry && m.IsJSON() {
				_, m.Values, _ = devices.DecodePayload(m.Payload, m.Received)
			}
			msgs, ids = append(msgs, m), append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(msgs) == 0 {
			if upTo > 0 {
				// Deleted meanwhile (or never stored): nothing between.
				w.sums.SetSeq(devices.Seq(upTo - 1))
			}
			return nil
		}
		w.apply(msgs, ids)
		if len(msgs) < followPage {
			if upTo > 0 {
				w.sums.SetSeq(devices.Seq(max(int64(w.sums.Seq()), upTo-1)))
			}
			return nil
		}
	}
}

// apply folds msgs, in seq order above the follower's position, into the
// summaries and hands them to the live feed.
func (w *Writer) apply(msgs []devices.Message, ids []int64) {
	ds := make([]*store.Summary, len(msgs))
	for i := range msgs {
		d := w.sums.Get(msgs[i].Device)
		if d == nil {
			d = w.sums.Add(&store.Summary{ID: ids[i], Name: msgs[i].Device})
		}
		ds[i] = d
	}
	w.sums.Apply(ds, msgs)
	if w.OnCommit != nil {
		w.OnCommit(msgs)
	}
}

// lead reports whether this hub is the one that saves summaries and runs
// retention, taking the advisory lock when no hub holds it.
func (w *Writer) lead(ctx context.Context) bool {
	ok := w.takeLead(ctx)
	w.leading.Store(ok)
	return ok
}

// Leading reports whether this hub held the leader's lock when the write
// loop last checked (every few seconds): the hub that also evaluates the
// alert rules and delivers their webhooks.
func (w *Writer) Leading() bool { return w.leading.Load() }

func (w *Writer) takeLead(ctx context.Context) bool {
	if w.leader != nil {
		if err := w.leader.Ping(ctx); err == nil {
			return true
		}
		w.leader.Release() // the session is gone, and the lock with it
		w.leader = nil
		w.Logger.Warn("lost the database session that made this hub save summaries and run retention")
	}
	c, err := w.DB.Pool.Acquire(ctx)
	if err != nil {
		return false
	}
	var ok bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLock).Scan(&ok); err != nil || !ok {
		c.Release()
		return false
	}
	w.leader = c
	w.Logger.Info("this hub now saves device summaries and runs retention for all hubs")
	return true
}

// DownlinkHook is told, on every hub, that another hub created a command
// for device or changed its shared attributes (kind "command" or
// "attributes"), so that the hub holding the device's connection sends
// them; or changed the alert rules (kind "rules", device "*"), so that the
// leading hub's evaluator reads them again.
type DownlinkHook func(kind, device string)

// SetDownlinkHook sets the hook (cmd/telehub: the hub's devices.Downlink).
func (w *Writer) SetDownlinkHook(h DownlinkHook) { w.downlinkHook.Store(&h) }

// notifyDownlink tells the other hubs of a command or attribute change.
func (w *Writer) notifyDownlink(ctx context.Context, kind, device string) {
	w.DB.Pool.Exec(ctx, `SELECT pg_notify('`+downlinkChannel+`', $1)`, w.hubID+" "+kind+" "+device)
}

func (w *Writer) downlinkNotified(payload string) {
	hub, rest, _ := strings.Cut(payload, " ")
	kind, device, _ := strings.Cut(rest, " ")
	if hub == w.hubID || device == "" {
		return
	}
	if h := w.downlinkHook.Load(); h != nil {
		(*h)(kind, device)
	}
}
