package devices

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrTooManyCommands refuses a command for a device that has too many
// commands waiting already (Downlink.MaxPending).
var ErrTooManyCommands = errors.New("too many commands waiting for the device")

// DeviceSender publishes to devices over MQTT (the embedded broker).
type DeviceSender interface {
	// SendCommand publishes c, QoS 1, on the device's connections that
	// listen to its commands and were not sent c yet, and returns on how
	// many; 0 means the device is not listening now, or (Listens tells)
	// that every connection has c already.
	SendCommand(c *Command) int
	// SendAttributes publishes the device's shared attributes to its
	// connections that listen for them: full, or what changed (delta,
	// deleted keys as null; nil: full) where the topic style wants it.
	SendAttributes(device string, full, delta map[string]json.RawMessage) int
	// Listens reports whether the device may be sent commands now.
	Listens(device string) bool
}

// Default limits of Downlink.
const (
	DefaultMaxPendingCommands = 100
	downlinkQueue             = 1024
)

// Downlink is the hub's way to devices. It delivers commands and follows
// them to their end:
// stored first (queued), published when the device listens (sent; at once
// if it does, else when it subscribes to its command topics, in creation
// order, also after a restart), delivered at the device's PUBACK, replied
// at its answer, expired at their deadline, each change stored and pushed
// through OnChange. And it keeps the devices' attributes: shared ones set
// through the API are pushed to the device, again whenever it subscribes;
// client ones are what the device reports. Run does every store write and
// send that a device causes, in order per device and for many devices at
// once (a lane each), so that their writes share commits and one device's
// wait for a commit holds up no other; the broker's hooks only hand it
// work, so no client waits on another.
type Downlink struct {
	// Store keeps the commands, Twins the attributes. Required.
	Store CommandStore
	Twins AttributeStore
	// Sender publishes them; nil until a broker is attached (commands then
	// wait, queued).
	Sender DeviceSender
	// OnChange receives every command after each change of its status
	// (the live feed). Optional.
	OnChange func(Command)
	// OnAttributes receives every change of a device's attributes (the live
	// feed). Optional.
	OnAttributes func(AttributeEvent)
	// MaxPending caps a device's commands not yet final. Default
	// DefaultMaxPendingCommands.
	MaxPending int
	// Shared tells that other hubs share the store (PostgreSQL): a command
	// may end on another hub, so Wait also reads it every 200 ms.
	Shared bool
	// OnRoundTrip is told, for each command that got its answer, how long
	// it took from creation (metrics). Optional.
	OnRoundTrip func(time.Duration)
	// Now is the clock. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger

	counts  [7]atomic.Int64 // status changes into each of CommandStatuses
	refused atomic.Int64    // commands refused: too many waiting (MaxPending)

	initOnce sync.Once
	work     chan work
	quit     chan struct{} // closed when Run returns
	lanes    lanes
	mu       sync.Mutex
	listen   map[string]bool // devices to send to at the next turn
	// acked holds the commands a device acknowledged whose change to
	// delivered is not committed yet: a send in between reads them as
	// still to send, and must not send them again.
	acked   map[int64]bool
	waiters map[int64][]chan *Command
}

func (d *Downlink) init() {
	d.initOnce.Do(func() {
		if d.MaxPending <= 0 {
			d.MaxPending = DefaultMaxPendingCommands
		}
		if d.Now == nil {
			d.Now = time.Now
		}
		if d.Logger == nil {
			d.Logger = slog.Default().With("component", "downlink")
		}
		d.work = make(chan work, downlinkQueue)
		d.quit = make(chan struct{})
		d.listen = make(map[string]bool)
		d.acked = make(map[int64]bool)
		d.waiters = make(map[int64][]chan *Command)
	})
}

// Create stores a command for device and sends it if the device listens.
func (d *Downlink) Create(ctx context.Context, device string, r CommandRequest) (*Command, error) {
	return d.create(ctx, device, r, nil)
}

// CreateWait is Create then Wait, until the command ends or wait passes,
// without reading the command back first: its waiter is in place before
// the command can be sent, so no change can come before it.
func (d *Downlink) CreateWait(ctx context.Context, device string, r CommandRequest, wait time.Duration) (*Command, error) {
	var ch chan *Command
	c, err := d.create(ctx, device, r, func(id int64) { ch = d.addWaiter(id) })
	if err != nil {
		return nil, err
	}
	defer d.dropWaiter(c.ID, ch)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return d.waitOn(ctx, device, c.ID, ch)
}

func (d *Downlink) create(ctx context.Context, device string, r CommandRequest, stored func(id int64)) (*Command, error) {
	d.init()
	if err := ValidateDeviceID(device); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	n, err := d.Store.CountPending(ctx, device)
	if err != nil {
		return nil, err
	}
	if n >= d.MaxPending {
		d.refused.Add(1)
		return nil, fmt.Errorf("%w: %d waiting for %q, at most %d", ErrTooManyCommands, n, device, d.MaxPending)
	}
	now := d.Now().UnixMilli()
	c, err := d.Store.CreateCommand(ctx, Command{Device: device, Method: r.Method, Params: r.Params, Oneway: r.Oneway,
		Created: now, Expires: now + r.Timeout.Milliseconds()})
	if err != nil {
		return nil, err
	}
	if stored != nil {
		stored(c.ID)
	}
	d.changed(c)
	d.Listening(device)
	return c, nil
}

// Cancel ends a command that is not final yet; ErrConflict otherwise.
func (d *Downlink) Cancel(ctx context.Context, device string, id int64) (*Command, error) {
	d.init()
	c, err := d.Store.Command(ctx, device, id)
	if err != nil {
		return nil, err
	}
	if c.finished() {
		return nil, fmt.Errorf("command %d is %s already: %w", id, c.Status, ErrConflict)
	}
	c, ok, err := d.Store.UpdateCommand(ctx, device, id, []CommandStatus{CommandQueued, CommandSent, CommandDelivered}, CommandCancelled, d.Now().UnixMilli(), "cancelled", nil, "")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("command %d ended meanwhile: %w", id, ErrConflict)
	}
	d.changed(c)
	return c, nil
}

// Wait returns the command once it is final (or delivered, one way), or
// its latest state when ctx ends first.
func (d *Downlink) Wait(ctx context.Context, device string, id int64) (*Command, error) {
	d.init()
	ch := d.addWaiter(id)
	defer d.dropWaiter(id, ch)
	// The wait ending is no failure: every read answers with the state
	// the command is in, whatever is left of ctx.
	c, err := d.Store.Command(context.WithoutCancel(ctx), device, id) // after registering: no change is missed
	if err != nil || c.finished() {
		return c, err
	}
	return d.waitOn(ctx, device, id, ch)
}

// addWaiter registers a channel that changed fills when command id ends.
func (d *Downlink) addWaiter(id int64) chan *Command {
	ch := make(chan *Command, 1)
	d.mu.Lock()
	d.waiters[id] = append(d.waiters[id], ch)
	d.mu.Unlock()
	return ch
}

func (d *Downlink) dropWaiter(id int64, ch chan *Command) {
	d.mu.Lock()
	defer d.mu.Unlock()
	list := d.waiters[id]
	for i, w := range list {
		if w == ch {
			d.waiters[id] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(d.waiters[id]) == 0 {
		delete(d.waiters, id)
	}
}

// waitOn waits for command id to end (ch, from addWaiter) or ctx to, and
// answers the command as stored then, with its history.
func (d *Downlink) waitOn(ctx context.Context, device string, id int64, ch chan *Command) (*Command, error) {
	read := context.WithoutCancel(ctx)
	// Changes made here arrive on ch; those made by another hub sharing
	// the store (the one whose broker holds the device) are read.
	var tick <-chan time.Time
	if d.Shared {
		poll := time.NewTicker(waitPoll)
		defer poll.Stop()
		tick = poll.C
	}
	for {
		select {
		case <-ch: // read again, with its history
			return d.Store.Command(read, device, id)
		case <-tick:
			if c, err := d.Store.Command(read, device, id); err == nil && c.finished() {
				return c, nil
			}
		case <-ctx.Done():
			return d.Store.Command(read, device, id)
		}
	}
}

// waitPoll is how often Wait reads a command that another hub may finish.
const waitPoll = 200 * time.Millisecond

// finished reports whether nothing more will happen to c.
func (c *Command) finished() bool {
	return c.Status.Final() || c.Oneway && c.Status == CommandDelivered
}

// Listening tells that device may now receive commands (it subscribed to
// its command topics): the commands waiting for it go out.
func (d *Downlink) Listening(device string) {
	d.init()
	d.mu.Lock()
	first := !d.listen[device]
	d.listen[device] = true
	d.mu.Unlock()
	if first {
		d.do(device, func(ctx context.Context) { d.send(ctx, device) })
	}
}

// Delivered records the device's PUBACK of command id. From the call on,
// until the change is committed, the command is not sent again.
func (d *Downlink) Delivered(device string, id int64) {
	d.init()
	d.mu.Lock()
	d.acked[id] = true
	d.mu.Unlock()
	d.do(device, func(ctx context.Context) {
		d.update(ctx, device, id, []CommandStatus{CommandQueued, CommandSent}, CommandDelivered, "acknowledged by the device", nil, "")
		unmark := func() {
			d.mu.Lock()
			delete(d.acked, id)
			d.mu.Unlock()
		}
		if !later(ctx, unmark) { // after the change above is committed
			unmark()
		}
	})
}

// Replied records the device's answer to command id: JSON as it came (text
// that is not JSON becomes a JSON string); an object with an "error"
// string fails the command with it.
func (d *Downlink) Replied(device string, id int64, payload []byte) {
	d.init()
	payload = bytes.Clone(payload)
	d.do(device, func(ctx context.Context) {
		to, note, errText := CommandReplied, "answered", ""
		resp := json.RawMessage(bytes.TrimSpace(payload))
		switch {
		case len(payload) > MaxCommandResponse:
			resp, to, errText = nil, CommandFailed, fmt.Sprintf("answer larger than %d bytes", MaxCommandResponse)
		case !json.Valid(resp):
			resp, _ = json.Marshal(string(payload))
		default:
			var e struct {
				Error any `json:"error"`
			}
			if json.Unmarshal(resp, &e) == nil && e.Error != nil {
				to, note = CommandFailed, "the device answered with an error"
				if s, ok := e.Error.(string); ok {
					errText = s
				} else {
					b, _ := json.Marshal(e.Error)
					errText = string(b)
				}
			}
		}
		d.update(ctx, device, id, []CommandStatus{CommandQueued, CommandSent, CommandDelivered}, to, note, resp, errText)
	})
}

// Run does the Downlink's work until ctx ends: sends, status changes, and
// every second the expiry of commands past their deadline. It returns once
// the work it started has ended.
func (d *Downlink) Run(ctx context.Context) {
	d.init()
	defer d.lanes.wait()
	defer close(d.quit) // first: work that hands on more does not block
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	ticks := 0
	for {
		select {
		case <-ctx.Done():
			return
		case w := <-d.work:
			d.lanes.run(ctx, w)
		case <-tick.C:
			d.expire(ctx)
			if ticks++; ticks%sweepTicks == 0 {
				d.sweep(ctx)
			}
		}
	}
}

// work is one thing to do for a device.
type work struct {
	device string
	fn     func(context.Context)
}

// do hands fn, about device, to Run; when the queue is full the caller
// waits (only the client whose packets called it), and after Run returned
// fn is dropped.
func (d *Downlink) do(device string, fn func(context.Context)) {
	select {
	case d.work <- work{device, fn}:
	case <-d.quit:
	}
}

// lanes runs each device's work in order, in a goroutine per device that
// has work (its lane), many devices at once: their store writes share
// commits (store.GroupTx), and a device waiting for one holds up no other.
// At most maxLanes run; then run waits for one to end.
type lanes struct {
	mu     sync.Mutex
	byName map[string][]func(context.Context) // a running lane's queued work
	slots  chan struct{}
	wg     sync.WaitGroup
}

// maxLanes bounds the devices whose work runs at once.
const maxLanes = 1024

// run adds w to its device's lane, starting the lane if it is not running.
func (l *lanes) run(ctx context.Context, w work) {
	l.mu.Lock()
	if l.byName == nil {
		l.byName, l.slots = map[string][]func(context.Context){}, make(chan struct{}, maxLanes)
	}
	if q, ok := l.byName[w.device]; ok {
		l.byName[w.device] = append(q, w.fn)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.slots <- struct{}{}
	l.mu.Lock()
	l.byName[w.device] = nil
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ln := &lane{}
		lctx := context.WithValue(ctx, laneKey{}, ln)
		fn := w.fn
		for {
			fn(lctx)
			// More work for the device goes on at once, its writes queued
			// behind the ones before (they share a commit); when there is
			// none, or much is waiting, the writes are waited for.
			l.mu.Lock()
			q := l.byName[w.device]
			if len(q) > 0 && len(ln.after) < maxUnsettled {
				fn, l.byName[w.device] = q[0], q[1:]
				l.mu.Unlock()
				continue
			}
			l.mu.Unlock()
			ln.settle()
			l.mu.Lock()
			q = l.byName[w.device]
			if len(q) == 0 {
				delete(l.byName, w.device)
				l.mu.Unlock()
				<-l.slots
				return
			}
			fn, l.byName[w.device] = q[0], q[1:]
			l.mu.Unlock()
		}
	}()
}

// lane is one device's lane while it runs: what is to happen, in order,
// once the writes its work submitted are committed.
type lane struct{ after []func() }

type laneKey struct{}

// maxUnsettled bounds the writes a lane submits before it waits for them.
const maxUnsettled = 64

// later runs fn after the writes submitted before it, if ctx is a lane's
// (and returns true); otherwise it returns false and does nothing.
func later(ctx context.Context, fn func()) bool {
	ln, _ := ctx.Value(laneKey{}).(*lane)
	if ln == nil {
		return false
	}
	ln.after = append(ln.after, fn)
	return true
}

func (ln *lane) settle() {
	for _, fn := range ln.after {
		fn()
	}
	ln.after = ln.after[:0]
}

// wait returns when every lane has ended.
func (l *lanes) wait() { l.wg.Wait() }

// send publishes device's pending commands, oldest first. It reads them
// from the store, so the lane's writes before it are waited for first: a
// command whose change to sent or delivered is not committed yet would
// read as still to send, and go out twice.
func (d *Downlink) send(ctx context.Context, device string) {
	if ln, _ := ctx.Value(laneKey{}).(*lane); ln != nil {
		ln.settle()
	}
	d.mu.Lock()
	delete(d.listen, device)
	d.mu.Unlock()
	if d.Sender == nil {
		return
	}
	pending, err := d.Store.PendingCommands(ctx, device, d.Now().UnixMilli())
	if err != nil {
		d.Logger.Error("reading pending commands failed", "device", device, "error", err)
		return
	}
	for i := range pending {
		c := &pending[i]
		d.mu.Lock()
		acked := d.acked[c.ID]
		d.mu.Unlock()
		if acked {
			continue
		}
		if d.Sender.SendCommand(c) == 0 {
			if c.Status == CommandSent && d.Sender.Listens(device) {
				continue // in flight on every connection already
			}
			return // not listening: the rest wait too
		}
		if c.Status == CommandQueued {
			d.update(ctx, device, c.ID, []CommandStatus{CommandQueued}, CommandSent, "published", nil, "")
		}
	}
}

// update moves a command from one of from to to. In a lane it does not
// wait: the change is queued behind the lane's earlier writes and is
// announced (changed) once committed, in order; so a command sent,
// acknowledged and answered within one commit takes one commit, not three.
func (d *Downlink) update(ctx context.Context, device string, id int64, from []CommandStatus, to CommandStatus, note string, resp json.RawMessage, errText string) {
	// device "" (expiry) matches any; otherwise a device moves only its own
	// commands (an answer to another's is not taken).
	done := func(c *Command, ok bool, err error) {
		if err != nil && ctx.Err() != nil {
			// Shutting down: the change was left out (or, if its write had
			// started, failed); the command is read from the store at the
			// next start, in the status it has there.
			d.Logger.Debug("command change not made before shutdown", "id", id, "status", string(to), "error", err)
			return
		}
		if err != nil {
			d.Logger.Error("updating a command failed", "id", id, "status", string(to), "error", err)
			return
		}
		if ok {
			d.changed(c)
		}
	}
	at := d.Now().UnixMilli()
	wait := d.Store.UpdateCommandLater(device, id, from, to, at, note, resp, errText)
	if !later(ctx, func() { done(wait(ctx)) }) {
		done(wait(ctx))
	}
}

// sweepTicks is how often, in seconds, Run looks for queued commands of
// devices that listen: a wake-up lost (a notification from another hub
// before this one listened, an external broker that was away) delays a
// command by that much at most.
const sweepTicks = 5

// sweep sends the queued commands of devices that listen now.
func (d *Downlink) sweep(ctx context.Context) {
	if d.Sender == nil {
		return
	}
	queued, err := d.Store.QueuedDevices(ctx, d.Now().UnixMilli(), 1000)
	if err != nil {
		d.Logger.Warn("looking for queued commands failed", "error", err)
		return
	}
	for _, device := range queued {
		if d.Sender.Listens(device) {
			d.Listening(device)
		}
	}
}

// expire ends the commands past their deadline.
func (d *Downlink) expire(ctx context.Context) {
	due, err := d.Store.DueCommands(ctx, d.Now().UnixMilli(), 500)
	if err != nil {
		d.Logger.Error("reading expired commands failed", "error", err)
		return
	}
	for _, c := range due {
		note := "not delivered in time"
		if c.Status == CommandDelivered {
			note = "no answer in time"
		}
		// In the device's lane: after what is under way for it, and
		// beside other devices' work instead of a commit at a time.
		d.lanes.run(ctx, work{c.Device, func(ctx context.Context) {
			d.update(ctx, "", c.ID, []CommandStatus{CommandQueued, CommandSent, CommandDelivered}, CommandExpired, note, nil, "")
		}})
	}
}

func (d *Downlink) changed(c *Command) {
	for i, st := range CommandStatuses {
		if st == c.Status {
			d.counts[i].Add(1)
		}
	}
	if (c.Status == CommandReplied || c.Status == CommandFailed && c.Response != nil) && d.OnRoundTrip != nil {
		d.OnRoundTrip(time.Duration(c.Updated-c.Created) * time.Millisecond)
	}
	if d.OnChange != nil {
		d.OnChange(*c)
	}
	if !c.finished() {
		return
	}
	d.mu.Lock()
	for _, ch := range d.waiters[c.ID] {
		select {
		case ch <- c:
		default:
		}
	}
	d.mu.Unlock()
}

// Command returns one of a device's commands, or ErrNotFound.
func (d *Downlink) Command(ctx context.Context, device string, id int64) (*Command, error) {
	return d.Store.Command(ctx, device, id)
}

// ListCommands returns a device's commands, newest first.
func (d *Downlink) ListCommands(ctx context.Context, f CommandFilter) ([]Command, error) {
	return d.Store.ListCommands(ctx, f)
}

// FeedMessage is c as the live feed carries it: a message with no sequence
// number (not one of the device's), kind KindCommand, topic
// "$telehub/commands/{device}" and the command as payload.
func (c Command) FeedMessage() Message {
	payload, _ := json.Marshal(c)
	return Message{Device: c.Device, Topic: "$telehub/commands/" + c.Device, Kind: KindCommand, TS: c.Updated, Received: c.Updated, Payload: payload}
}

// Refused returns how many commands were refused for a device with too
// many waiting.
func (d *Downlink) Refused() int64 { return d.refused.Load() }

// AttributeEvents returns a device's latest attribute changes.
func (d *Downlink) AttributeEvents(ctx context.Context, device string, limit int) ([]AttributeEvent, error) {
	return d.Twins.AttributeEvents(ctx, device, limit)
}

// FeedMessage is e as the live feed carries it (kind KindAttributes, no
// sequence number).
func (e AttributeEvent) FeedMessage() Message {
	payload, _ := json.Marshal(e)
	return Message{Device: e.Device, Topic: "$telehub/attributes/" + e.Device, Kind: KindAttributes, TS: e.At, Received: e.At, Payload: payload}
}

// Counts returns how many commands entered each status since start, in
// the order of CommandStatuses.
func (d *Downlink) Counts() []int64 {
	out := make([]int64, len(CommandStatuses))
	for i := range out {
		out[i] = d.counts[i].Load()
	}
	return out
}

// Attributes returns a device's attributes.
func (d *Downlink) Attributes(ctx context.Context, device string) (*Attributes, error) {
	if err := ValidateDeviceID(device); err != nil {
		return nil, err
	}
	return d.Twins.Attributes(ctx, device)
}

// SetShared sets a device's shared attributes (replace: exactly set;
// otherwise merged, null deleting a key) and pushes what changed to the
// device if it listens. It returns the device's attributes.
func (d *Downlink) SetShared(ctx context.Context, device string, set map[string]json.RawMessage, replace bool) (*Attributes, error) {
	d.init()
	now := d.Now().UnixMilli()
	changed, err := d.Twins.SetAttributes(ctx, device, AttrShared, set, replace, now)
	if err != nil {
		return nil, err
	}
	if len(changed) > 0 && d.OnAttributes != nil {
		d.OnAttributes(AttributeEvent{Device: device, Scope: AttrShared, At: now, Change: changed})
	}
	a, err := d.Twins.Attributes(ctx, device)
	if err != nil {
		return nil, err
	}
	if len(changed) > 0 {
		full := a.Values(AttrShared)
		d.do(device, func(context.Context) {
			if d.Sender != nil {
				d.Sender.SendAttributes(device, full, changed)
			}
		})
	}
	return a, nil
}

// AttributesListening tells that device subscribed to its shared
// attributes: it gets all of them.
func (d *Downlink) AttributesListening(device string) {
	d.init()
	d.do(device, func(ctx context.Context) {
		a, err := d.Twins.Attributes(ctx, device)
		if err != nil || d.Sender == nil {
			return
		}
		d.Sender.SendAttributes(device, a.Values(AttrShared), nil)
	})
}

// Reported records client attributes the device published (a JSON
// object, merged; null deletes a key). What does not parse is dropped and
// logged.
func (d *Downlink) Reported(device string, payload []byte) {
	d.init()
	payload = bytes.Clone(payload)
	d.do(device, func(ctx context.Context) {
		set, err := ParseAttributes(payload)
		var changed map[string]json.RawMessage
		now := d.Now().UnixMilli()
		if err == nil {
			changed, err = d.Twins.SetAttributes(ctx, device, AttrClient, set, false, now)
		}
		if len(changed) > 0 && d.OnAttributes != nil {
			d.OnAttributes(AttributeEvent{Device: device, Scope: AttrClient, At: now, Change: changed})
		}
		if err != nil {
			d.Logger.Warn("client attributes not stored", "device", device, "error", err)
		}
	})
}

// AttributesRequested answers ThingsBoard's attribute request,
// {"clientKeys":"a,b","sharedKeys":"c"} (no keys: all of the scope), with
// {"client":{...},"shared":{...}}.
func (d *Downlink) AttributesRequested(device string, payload []byte, reply func([]byte)) {
	d.init()
	payload = bytes.Clone(payload)
	d.do(device, func(ctx context.Context) {
		var req struct {
			ClientKeys string `json:"clientKeys"`
			SharedKeys string `json:"sharedKeys"`
		}
		json.Unmarshal(payload, &req)
		a, err := d.Twins.Attributes(ctx, device)
		if err != nil {
			d.Logger.Warn("attribute request not answered", "device", device, "error", err)
			return
		}
		pick := func(all map[string]json.RawMessage, keys string) map[string]json.RawMessage {
			if strings.TrimSpace(keys) == "" {
				return all
			}
			out := map[string]json.RawMessage{}
			for _, k := range strings.Split(keys, ",") {
				if v, ok := all[strings.TrimSpace(k)]; ok {
					out[strings.TrimSpace(k)] = v
				}
			}
			return out
		}
		resp, _ := json.Marshal(map[string]map[string]json.RawMessage{
			"client": pick(a.Values(AttrClient), req.ClientKeys),
			"shared": pick(a.Values(AttrShared), req.SharedKeys),
		})
		reply(resp)
	})
}
