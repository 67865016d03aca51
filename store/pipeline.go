package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telehub/telehub/devices"
)

// Defaults for Pipeline fields.
const (
	DefaultMaxBatch  = 4096
	DefaultQueueSize = 16384
	// DefaultLinger is Pipeline.Linger's default.
	DefaultLinger = 2 * time.Millisecond
	// DefaultMaxMetrics is how many metric names one device may have.
	DefaultMaxMetrics = 1000
	// DefaultMaxMetricName is the longest metric name accepted, in bytes.
	DefaultMaxMetricName = 128
)

// lingerRows is the queue length below which the write loop lingers.
const lingerRows = 64

// ErrNotStarted is returned by Write and TryWrite before Start.
var ErrNotStarted = errors.New("store: pipeline not started")

// Pipeline is the one goroutine that writes messages, whatever the backend.
// It takes Pending messages from a bounded queue and commits them in
// groups: as soon as one commit is done it commits everything that arrived
// meanwhile (up to MaxBatch), so batches are small at low load and grow with
// load, and no timer is ever waited out. After each commit a dispatch
// goroutine calls every Done callback in order (the broker's acker then
// writes the PUBACKs) and then OnCommit.
//
// A failed commit is retried with backoff until it succeeds or the Pipeline
// is closed: nothing accepted is dropped, and while the store is failing
// the queue fills and producers wait (QoS 1 back-pressure).
//
// A backend embeds a Pipeline, sets its fields, registers its periodic
// work with Every and calls Start; its deletes, retention and other
// maintenance run on the write loop through Run, between commits.
type Pipeline struct {
	// MaxBatch caps the messages in one transaction. Default DefaultMaxBatch.
	MaxBatch int
	// Linger is how long the write loop waits for more messages before a
	// commit when fewer than 64 are queued: at most that much latency for
	// fewer, larger commits. Default DefaultLinger; 0 commits at once.
	Linger time.Duration
	// QueueSize is the capacity of the ingest queue, in messages. Default
	// DefaultQueueSize.
	QueueSize int
	// OnCommit receives each committed batch, in sequence order, after the
	// Done callbacks. The slice is shared and must not be modified. Optional.
	OnCommit func([]devices.Message)
	// Stats counts stored messages. Optional.
	Stats *devices.Stats
	// MaxMetrics caps the metric names of one device: a message that would
	// add names past it is refused (devices.ErrTooManyMetrics), so that one
	// device cannot grow the hub's memory, its latest values and its
	// rollups without bound. Default DefaultMaxMetrics.
	MaxMetrics int
	// MaxMetricName caps the length of a metric name, in bytes; a message
	// with a longer one is refused (devices.ErrMetricName). Default
	// DefaultMaxMetricName.
	MaxMetricName int
	// Observe, when set, is told the size and duration of every commit
	// that stored messages (metrics). It runs on the write loop: keep it cheap.
	Observe func(rows int, d time.Duration)
	// Logger defaults to slog.Default() with component=writer.
	Logger *slog.Logger

	backend  Backend
	tasks    []*task
	q        chan *devices.Pending
	ops      chan func()
	kick     chan struct{} // a commit is wanted even with no message (Kick)
	dispatch chan *batch
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	closed   atomic.Bool
	lastSeq  atomic.Int64

	namesMu sync.Mutex
	names   map[string]map[string]struct{} // metric names admitted per device (admit)

	failing  atomic.Bool
	lastErr  atomic.Pointer[string]
	commitNs atomic.Int64 // duration of the latest commit
	commits  atomic.Int64 // transactions that stored messages
	failures atomic.Int64 // failed commit attempts
}

// task is periodic work on the write loop (Every).
type task struct {
	every time.Duration
	next  time.Time
	run   func(ctx context.Context)
}

type batch struct {
	pending []*devices.Pending
	msgs    []devices.Message
}

// Every registers fn to run on the write loop every d, between commits.
// fn should do its work in steps and return early while Busy. Call it
// before Start.
func (p *Pipeline) Every(d time.Duration, fn func(ctx context.Context)) {
	p.tasks = append(p.tasks, &task{every: d, run: fn})
}

// Start begins writing to b. last is the highest sequence number committed
// so far; sums, when not nil, seeds the metric names each device already has
// (MaxMetrics).
func (p *Pipeline) Start(b Backend, last devices.Seq, sums *Summaries) {
	if p.MaxBatch <= 0 {
		p.MaxBatch = DefaultMaxBatch
	}
	if p.QueueSize <= 0 {
		p.QueueSize = DefaultQueueSize
	}
	if p.MaxMetrics <= 0 {
		p.MaxMetrics = DefaultMaxMetrics
	}
	if p.MaxMetricName <= 0 {
		p.MaxMetricName = DefaultMaxMetricName
	}
	if p.Logger == nil {
		p.Logger = slog.Default().With("component", "writer")
	}
	if p.Stats == nil {
		p.Stats = new(devices.Stats)
	}
	p.backend = b
	p.lastSeq.Store(int64(last))
	p.names = make(map[string]map[string]struct{})
	if sums != nil {
		for _, s := range sums.All() {
			set := make(map[string]struct{}, len(s.Device.Latest))
			for k := range s.Device.Latest {
				set[k] = struct{}{}
			}
			p.names[s.Name] = set
		}
	}
	now := time.Now()
	for _, t := range p.tasks {
		t.next = now.Add(t.every)
	}
	p.q = make(chan *devices.Pending, p.QueueSize)
	p.ops = make(chan func())
	p.kick = make(chan struct{}, 1)
	p.dispatch = make(chan *batch, 4)
	p.stopping = make(chan struct{})
	p.wg.Add(2)
	go p.writeLoop()
	go p.dispatchLoop()
}

// LastSeq returns the highest committed sequence number.
func (p *Pipeline) LastSeq() devices.Seq { return devices.Seq(p.lastSeq.Load()) }

// CommitFailures returns how many commit attempts failed (each is retried).
func (p *Pipeline) CommitFailures() int64 { return p.failures.Load() }

// Healthy reports whether the latest commit succeeded, and the latest error.
func (p *Pipeline) Healthy() (bool, string) {
	if !p.failing.Load() {
		return true, ""
	}
	if e := p.lastErr.Load(); e != nil {
		return false, *e
	}
	return false, "commit failing"
}

// QueueLen returns the number of messages waiting in the queue.
func (p *Pipeline) QueueLen() int { return len(p.q) }

// Commits returns how many transactions have stored messages so far.
func (p *Pipeline) Commits() int64 { return p.commits.Load() }

// LastCommit returns how long the latest commit took.
func (p *Pipeline) LastCommit() time.Duration { return time.Duration(p.commitNs.Load()) }

// Busy reports whether messages are waiting: long work on the write loop
// checks it between steps and lets them in (Yield).
func (p *Pipeline) Busy() bool { return len(p.q) > 0 }

var _ devices.MessageWriter = (*Pipeline)(nil)

// accept checks pm before it is queued.
func (p *Pipeline) accept(pm *devices.Pending) error {
	if p.q == nil {
		return ErrNotStarted
	}
	if p.closed.Load() {
		return devices.ErrClosed
	}
	return p.admit(&pm.Message)
}

// Write implements devices.MessageWriter.
func (p *Pipeline) Write(ctx context.Context, pm *devices.Pending) error {
	if err := p.accept(pm); err != nil {
		return err
	}
	select {
	case p.q <- pm:
		return nil
	case <-p.stopping:
		return devices.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TryWrite implements devices.MessageWriter.
func (p *Pipeline) TryWrite(pm *devices.Pending) error {
	if err := p.accept(pm); err != nil {
		return err
	}
	select {
	case p.q <- pm:
		return nil
	default:
		return devices.ErrQueueFull
	}
}

// admit checks m's metric names against MaxMetricName and the device's
// MaxMetrics, and records the new ones, before m is queued: the names of
// messages still in the queue count already, so the cap holds exactly.
func (p *Pipeline) admit(m *devices.Message) error {
	if len(m.Values) == 0 {
		return nil
	}
	for _, v := range m.Values {
		if len(v.Name) > p.MaxMetricName {
			return fmt.Errorf("%w: %d bytes, at most %d", devices.ErrMetricName, len(v.Name), p.MaxMetricName)
		}
	}
	p.namesMu.Lock()
	defer p.namesMu.Unlock()
	set := p.names[m.Device]
	fresh := 0
	for _, v := range m.Values {
		if _, ok := set[v.Name]; !ok {
			fresh++ // a repeated new name counts twice; harmless and rare
		}
	}
	if fresh == 0 {
		return nil
	}
	if len(set)+fresh > p.MaxMetrics {
		return fmt.Errorf("%w: device %q has %d, at most %d", devices.ErrTooManyMetrics, m.Device, len(set), p.MaxMetrics)
	}
	if set == nil {
		set = make(map[string]struct{}, len(m.Values))
		p.names[m.Device] = set
	}
	for _, v := range m.Values {
		set[v.Name] = struct{}{}
	}
	return nil
}

// ForgetNames drops a deleted device's admitted metric names.
func (p *Pipeline) ForgetNames(device string) {
	p.namesMu.Lock()
	delete(p.names, device)
	p.namesMu.Unlock()
}

// Stop stops taking messages, commits and dispatches everything already
// queued, runs the backend's Drain and waits for both goroutines. A batch
// that keeps failing is given up 2 s after Stop begins (its devices were
// not acknowledged and will resend); when ctx ends before the goroutines,
// Stop still waits for them but returns ctx's error.
func (p *Pipeline) Stop(ctx context.Context) error {
	if p.stopping == nil {
		return nil
	}
	p.closed.Store(true)
	p.stopOnce.Do(func() { close(p.stopping) })
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		<-done // the loop gives up retrying shortly after stopping
		return fmt.Errorf("close writer: %w", ctx.Err())
	}
}

// Run runs fn on the write loop, between commits, and returns its error.
func (p *Pipeline) Run(ctx context.Context, fn func() error) error {
	if p.ops == nil {
		return ErrNotStarted
	}
	done := make(chan error, 1)
	select {
	case p.ops <- func() { done <- fn() }:
	case <-p.stopping:
		return devices.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-done
}

// Yield commits the messages waiting now. Work on the write loop (Run,
// Every) calls it between its steps, so that it never holds ingestion up
// for longer than one step.
func (p *Pipeline) Yield() {
	if len(p.q) > 0 {
		p.commitRetrying(p.collect(nil))
	}
}

// Kick asks for a commit soon, with messages or without: a backend that
// lets other writes ride on its commits (SQLite's Ride) calls it.
func (p *Pipeline) Kick() {
	select {
	case p.kick <- struct{}{}:
	default: // one is wanted already
	}
}

// CommitEmpty commits a batch with no messages, which carries whatever the
// backend adds to every commit (device summaries, rollup steps), retrying
// like any batch. It reports false only when the Pipeline gave up at
// shutdown.
func (p *Pipeline) CommitEmpty() bool { return p.commitRetrying(&batch{}) }

func (p *Pipeline) writeLoop() {
	defer p.wg.Done()
	defer close(p.dispatch)
	ctx := context.Background()
	timer := time.NewTimer(p.untilNextTask())
	defer timer.Stop()
	for {
		var first *devices.Pending
		select {
		case first = <-p.q:
		case op := <-p.ops:
			op()
			continue
		case <-p.kick:
			if len(p.q) == 0 {
				p.CommitEmpty() // carries what the backend wants committed
				continue
			}
			// Messages are waiting: what the backend wants committed rides
			// on their commit, not on one more (an fsync) of its own.
			first = <-p.q
		case <-timer.C:
			now := time.Now()
			for _, t := range p.tasks {
				if !now.Before(t.next) {
					t.run(ctx)
					t.next = time.Now().Add(t.every)
				}
			}
			timer.Reset(p.untilNextTask())
			continue
		case <-p.stopping:
			// Commit what was accepted before Stop, then let the backend
			// save what it holds.
			for {
				b := p.collect(nil)
				if len(b.pending) == 0 {
					break
				}
				p.commitRetrying(b)
			}
			p.backend.Drain(ctx)
			return
		}
		if p.Linger > 0 && len(p.q) < lingerRows {
			// Few messages: wait a moment for more, so that a thousand
			// devices at a moderate rate share commits instead of paying
			// one each. The busier the hub, the less this waits.
			t := time.NewTimer(p.Linger)
			select {
			case <-t.C:
			case <-p.stopping:
				t.Stop()
			}
		}
		if p.commitRetrying(p.collect(first)) {
			p.backend.AfterBatch(ctx)
		}
	}
}

// untilNextTask is how long until the next periodic task is due (an hour
// when there is none).
func (p *Pipeline) untilNextTask() time.Duration {
	d := time.Hour
	now := time.Now()
	for _, t := range p.tasks {
		d = min(d, t.next.Sub(now))
	}
	return max(d, 0)
}

// collect takes first (if any) plus whatever is queued, up to MaxBatch.
func (p *Pipeline) collect(first *devices.Pending) *batch {
	b := &batch{pending: make([]*devices.Pending, 0, min(p.MaxBatch, len(p.q)+1))}
	if first != nil {
		b.pending = append(b.pending, first)
	}
	for len(b.pending) < p.MaxBatch {
		select {
		case pm := <-p.q:
			b.pending = append(b.pending, pm)
		default:
			return b
		}
	}
	return b
}

// commitRetrying commits b, retrying with exponential backoff (50 ms to 5 s)
// while the store fails. Once the Pipeline is stopping it gives up after a
// short grace, fails the batch and returns false.
func (p *Pipeline) commitRetrying(b *batch) bool {
	backoff := 50 * time.Millisecond
	failures := 0
	var giveUp <-chan time.Time
	for {
		start := time.Now()
		err := p.commit(b)
		if err == nil {
			d := time.Since(start)
			p.commitNs.Store(int64(d))
			if p.Observe != nil && len(b.pending) > 0 {
				p.Observe(len(b.pending), d)
			}
			if failures > 0 {
				p.Logger.Info("store recovered", "failed_attempts", failures)
			}
			p.failing.Store(false)
			if len(b.pending) > 0 {
				p.commits.Add(1)
				p.dispatch <- b
			}
			return true
		}
		failures++
		p.failures.Add(1)
		msg := err.Error()
		p.lastErr.Store(&msg)
		p.failing.Store(true)
		if failures == 1 || failures%20 == 0 {
			p.Logger.Error("commit failed; retrying", "error", err, "messages", len(b.pending), "attempts", failures)
		}
		if giveUp == nil {
			select {
			case <-p.stopping:
				giveUp = time.After(2 * time.Second)
			default:
			}
		}
		select {
		case <-time.After(backoff):
		case <-giveUp:
			p.Logger.Error("giving up on batch at shutdown; its devices were not acknowledged", "messages", len(b.pending), "error", err)
			for _, pm := range b.pending {
				p.Stats.Rejected(devices.ReasonStoreError)
				if pm.Done != nil {
					pm.Done(&pm.Message, err)
				}
			}
			return false
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// commit writes b's messages in one batch of the backend. Only after the
// commit succeeds does the sequence advance, so a failed attempt leaves no
// trace.
func (p *Pipeline) commit(b *batch) (err error) {
	ctx := context.Background()
	bt, err := p.backend.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rerr := bt.Rollback(ctx); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
	}()
	msgs := make([]devices.Message, len(b.pending))
	for i, pm := range b.pending {
		msgs[i] = pm.Message
		if err := bt.Append(ctx, &msgs[i]); err != nil {
			return err
		}
	}
	if err := bt.Commit(ctx); err != nil {
		return err
	}
	if len(msgs) > 0 {
		p.lastSeq.Store(int64(msgs[len(msgs)-1].Seq))
	}
	b.msgs = msgs
	return nil
}

func (p *Pipeline) dispatchLoop() {
	defer p.wg.Done()
	for b := range p.dispatch {
		flagged := 0
		for i, pm := range b.pending {
			if b.msgs[i].Flags != 0 {
				flagged++
			}
			if pm.Done != nil {
				pm.Done(&b.msgs[i], nil)
			}
		}
		p.Stats.Stored(len(b.msgs), flagged)
		if p.OnCommit != nil {
			p.OnCommit(b.msgs)
		}
	}
}
