package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telehub/telehub/devices"
)

// Engine evaluates the rules on committed messages and on a timer. Run
// owns its state; the other methods are safe from any goroutine.
type Engine struct {
	Store devices.AlertStore
	// Messages replays committed messages the feed did not carry (at start,
	// after the subscription fell behind).
	Messages devices.MessageService
	// Feed carries committed messages as they commit.
	Feed *devices.Feed
	// Activity lists every device's last-seen time and status, for the
	// timer rules.
	Activity func() []devices.Activity
	// Webhooks receive every rule's alerts.
	Webhooks []string
	// Leader, when set, tells whether this hub evaluates (several hubs on
	// one database: one evaluates); nil means always.
	Leader func() bool
	// OnChange receives each alert raised, acknowledged or cleared (the
	// live feed); OnSaved is called after a step with new deliveries
	// (the notifier's wake-up).
	OnChange func(devices.Alert)
	OnSaved  func()
	Logger   *slog.Logger
	// Tick is how often timer rules run (default 1 s); Now the clock.
	Tick time.Duration
	Now  func() time.Time
	// Retention is how long cleared alerts are kept, with their history
	// and deliveries (0 keeps them all); they are pruned every hour.
	Retention time.Duration

	rules     atomic.Pointer[ruleSet]
	reload    chan struct{}
	forget    chan int64
	initOnce  sync.Once
	evaluated atomic.Int64

	// Owned by Run.
	cursor  devices.Seq
	open    map[key]*devices.Alert
	states  map[key]*devices.RuleState
	step    pending
	saved   time.Time
	loaded  bool
	sub     *devices.Subscription
	ruleAge time.Time
	pruned  time.Time
}

type key struct {
	rule   int64
	device string
}

// pending is the work of a step not saved yet.
type pending struct {
	raised, cleared []*devices.Alert
	updated         map[*devices.Alert]bool
	states          map[key]bool // changed (saved) or dropped (absent from states)
	seqMoved        bool
}

func (p *pending) empty() bool {
	return len(p.raised)+len(p.cleared)+len(p.updated)+len(p.states) == 0
}

// catchUpChunk bounds one replay, and so one step, when the engine is behind.
const catchUpChunk = 5000

func (e *Engine) init() {
	e.initOnce.Do(func() {
		e.reload = make(chan struct{}, 1)
		e.forget = make(chan int64, 256)
		if e.Tick <= 0 {
			e.Tick = time.Second
		}
		if e.Now == nil {
			e.Now = time.Now
		}
		if e.Logger == nil {
			e.Logger = slog.New(slog.DiscardHandler)
		}
		e.rules.Store(newRuleSet(nil, e.Webhooks))
	})
}

// Prepare saves the evaluator's first position, the last committed
// message, on a database it never ran on, so that what commits from now on
// is evaluated even if Run starts later (several hubs: when this one
// leads). Call it at start, before messages flow.
func (e *Engine) Prepare(ctx context.Context) error {
	e.init()
	st, err := e.Store.LoadAlertEngine(ctx)
	if err != nil || st.Started {
		return err
	}
	_, err = e.Store.SaveAlertStep(ctx, &devices.AlertStep{Seq: e.Messages.LastSeq()})
	return err
}

// RulesChanged makes Run read the rules again (after the API or the rules
// file changed them).
func (e *Engine) RulesChanged() {
	e.init()
	select {
	case e.reload <- struct{}{}:
	default:
	}
}

// Evaluated counts the (message, rule) evaluations so far.
func (e *Engine) Evaluated() int64 { return e.evaluated.Load() }

// Receivers returns the webhooks of a rule's alerts.
func (e *Engine) Receivers(rule int64) []string {
	e.init()
	return e.rules.Load().receivers(rule)
}

// Run evaluates until ctx ends, then saves what it has.
func (e *Engine) Run(ctx context.Context) {
	e.init()
	tick := time.NewTicker(e.Tick)
	defer tick.Stop()
	defer func() {
		if e.sub != nil {
			e.sub.Close()
		}
		if e.loaded {
			e.save(context.WithoutCancel(ctx), true)
		}
	}()
	for ctx.Err() == nil {
		if e.Leader != nil && !e.Leader() {
			e.loaded = false // another hub may have moved on: reload when leading
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
			continue
		}
		if !e.loaded {
			if err := e.load(ctx); err != nil {
				e.Logger.Error("alerts: cannot load the evaluator's state; retrying", "error", err)
				select {
				case <-ctx.Done():
				case <-time.After(e.Tick):
				}
				continue
			}
		}
		if e.sub == nil {
			sub, err := e.Feed.Subscribe(1024)
			if err != nil {
				return // the feed is closed: the hub is stopping
			}
			e.sub = sub
			// Whatever committed before the subscription: from the store.
			e.catchUp(ctx, e.Messages.LastSeq())
			if e.sub == nil {
				continue // a save failed: load again
			}
		}
		select {
		case <-ctx.Done():
		case batch, ok := <-e.sub.C():
			if !ok {
				e.Logger.Warn("alerts: fell behind the live feed; catching up from the store", "error", e.sub.Err())
				e.sub = nil
				continue
			}
			e.onBatch(ctx, batch)
			// Take what else is waiting, so that one step serves them all.
			for more := e.sub != nil; more; more = more && e.sub != nil { // a failed save drops the subscription
				select {
				case b, ok := <-e.sub.C():
					if !ok {
						e.sub = nil
						more = false
						break
					}
					e.onBatch(ctx, b)
				default:
					more = false
				}
			}
		case <-tick.C:
			e.onTick(e.Now().UnixMilli())
			if time.Since(e.ruleAge) > 10*time.Second { // rules changed on another hub
				e.loadRules(ctx)
			}
			if e.Retention > 0 && time.Since(e.pruned) > time.Hour {
				e.prune(ctx)
			}
		case <-e.reload:
			e.loadRules(ctx)
		case id := <-e.forget:
			e.dropAlert(id)
		}
		e.save(ctx, false)
	}
}

// load reads the rules, the position and the open alerts and states.
func (e *Engine) load(ctx context.Context) error {
	st, err := e.Store.LoadAlertEngine(ctx)
	if err != nil {
		return err
	}
	e.open, e.states = map[key]*devices.Alert{}, map[key]*devices.RuleState{}
	e.step = pending{updated: map[*devices.Alert]bool{}, states: map[key]bool{}}
	for i := range st.Open {
		a := &st.Open[i]
		e.open[key{a.RuleID, a.Device}] = a
	}
	for i := range st.States {
		s := &st.States[i]
		e.states[key{s.Rule, s.Device}] = s
	}
	e.cursor = st.Seq
	if !st.Started {
		// A hub that never evaluated starts from now, not from its history.
		e.cursor = e.Messages.LastSeq()
		e.step.seqMoved = true
	}
	if e.sub != nil {
		e.sub.Close()
		e.sub = nil
	}
	e.loaded = true
	e.loadRules(ctx)
	return nil
}

// loadRules reads the rules and lets go of the state of rules that are
// gone or changed.
func (e *Engine) loadRules(ctx context.Context) {
	rules, err := e.Store.Rules(ctx)
	if err != nil {
		e.Logger.Error("alerts: cannot read the rules", "error", err)
		return
	}
	e.ruleAge = time.Now()
	old := e.rules.Load()
	set := newRuleSet(rules, e.Webhooks)
	e.rules.Store(set)
	if !e.loaded {
		return
	}
	now := e.Now().UnixMilli()
	for k, a := range e.open {
		r := set.byID[k.rule]
		switch {
		case r == nil: // deleted: the store cleared its alerts
			delete(e.open, k)
		case r.Disabled:
			e.clear(k, a, nil, now)
		}
	}
	for k := range e.states {
		r, was := set.byID[k.rule], old.byID[k.rule]
		if r == nil || r.Disabled || was == nil || r.Updated != was.Updated {
			// The store dropped the states of a changed rule; a deleted or
			// disabled rule's states go with it.
			delete(e.states, k)
			if r != nil && r.Disabled {
				e.step.states[k] = true
			}
		}
	}
}

func (e *Engine) dropAlert(id int64) {
	for k, a := range e.open {
		if a.ID == id {
			delete(e.open, k)
			delete(e.step.updated, a)
		}
	}
}

// Forget tells Run that an alert was cleared by hand.
func (e *Engine) Forget(id int64) {
	e.init()
	select {
	case e.forget <- id:
	default: // Run finds out at its next update of the alert
	}
}

// prune deletes the alerts cleared longer than Retention ago, a chunk at a
// time.
func (e *Engine) prune(ctx context.Context) {
	e.pruned = time.Now()
	before := e.Now().Add(-e.Retention).UnixMilli()
	var total int64
	for ctx.Err() == nil {
		n, err := e.Store.PruneAlerts(ctx, before, 1000)
		total += n
		if err != nil {
			e.Logger.Error("alerts: pruning cleared alerts failed; will retry", "error", err)
			break
		}
		if n < 1000 {
			break
		}
	}
	if total > 0 {
		e.Logger.Info("alerts: pruned cleared alerts", "alerts", total, "older_than", e.Retention)
	}
}

// onBatch evaluates the stored messages of a committed batch, after those
// it has not seen yet (from the store).
func (e *Engine) onBatch(ctx context.Context, batch []devices.Message) {
	for i := range batch {
		m := &batch[i]
		if m.Seq == 0 || m.Seq <= e.cursor {
			continue // not a stored message (a status change, a command), or seen
		}
		if m.Seq > e.cursor+1 {
			e.catchUp(ctx, m.Seq-1)
		}
		if m.Seq <= e.cursor {
			continue
		}
		e.evaluate(m)
		e.cursor = m.Seq
		e.step.seqMoved = true
	}
}

// catchUp evaluates the stored messages after the cursor up to upTo, a
// chunk at a time, saving after each.
func (e *Engine) catchUp(ctx context.Context, upTo devices.Seq) {
	for e.cursor < upTo && ctx.Err() == nil {
		to := min(upTo, e.cursor+catchUpChunk)
		err := e.Messages.Replay(ctx, "", e.cursor, to, func(m *devices.Message) error {
			if m.Values == nil && m.Kind == devices.KindTelemetry && m.IsJSON() {
				_, m.Values, _ = devices.DecodePayload(m.Payload, m.Received)
			}
			e.evaluate(m)
			e.cursor = m.Seq
			return nil
		})
		if err != nil {
			e.Logger.Error("alerts: cannot read committed messages", "error", err)
			return
		}
		e.cursor = to // past deleted messages too
		e.step.seqMoved = true
		if !e.save(ctx, to < upTo) {
			return
		}
	}
}

// evaluate runs the message-driven rules on one committed message.
func (e *Engine) evaluate(m *devices.Message) {
	if m.Kind != devices.KindTelemetry {
		return
	}
	set := e.rules.Load()
	at := m.Received
	for i := range m.Values {
		v := &m.Values[i]
		sc := set.threshold[v.Name]
		if sc == nil {
			continue
		}
		num, ok := devices.NumericValue(v.Value)
		if !ok {
			continue
		}
		sc.each(m.Device, func(r *devices.Rule) {
			e.evaluated.Add(1)
			e.threshold(r, m.Device, num, v.TS, at)
		})
	}
	set.rate.each(m.Device, func(r *devices.Rule) {
		e.evaluated.Add(1)
		e.countRate(r, m.Device, at)
	})
}

// threshold applies one reading to a threshold rule: a raised alert
// repeats or clears; otherwise the condition starts (or goes on) holding,
// and raises once it has held for r.For.
func (e *Engine) threshold(r *devices.Rule, device string, v float64, ts, at int64) {
	k := key{r.ID, device}
	val := v
	if a := e.open[k]; a != nil {
		switch {
		case r.Clears(v):
			e.clear(k, a, &val, at)
		case r.Holds(v):
			a.Count++
			a.LastValue, a.LastAt, a.Updated = &val, ts, e.Now().UnixMilli()
			a.Message = r.Describe(&val)
			if a.ID != 0 {
				e.step.updated[a] = true
			}
		}
		return
	}
	st := e.states[k]
	if !r.Holds(v) {
		if st != nil {
			delete(e.states, k)
			e.step.states[k] = true
		}
		return
	}
	since := at
	if st != nil {
		since = st.Since
	}
	if at-since >= time.Duration(r.For).Milliseconds() {
		if st != nil {
			delete(e.states, k)
			e.step.states[k] = true
		}
		e.raise(r, device, &val, ts)
		return
	}
	if st == nil {
		st = &devices.RuleState{Rule: r.ID, Device: device, Since: at}
		e.states[k] = st
	}
	st.Value = &val
	e.step.states[k] = true
}

// countRate counts a message in its rate window, raising at once when the
// window has more than r.Max.
func (e *Engine) countRate(r *devices.Rule, device string, at int64) {
	k := key{r.ID, device}
	st := e.states[k]
	win := at - at%time.Duration(r.Interval).Milliseconds()
	if st == nil {
		st = &devices.RuleState{Rule: r.ID, Device: device, Window: win}
		e.states[k] = st
	}
	if win > st.Window {
		e.closeWindow(r, k, st, win)
	}
	st.Count++
	e.step.states[k] = true
	if r.Max != nil && st.Count > *r.Max {
		n := float64(st.Count)
		if a := e.open[k]; a != nil {
			a.Count++
			a.LastValue, a.LastAt, a.Updated = &n, at, e.Now().UnixMilli()
			a.Message = r.Describe(&n)
			if a.ID != 0 {
				e.step.updated[a] = true
			}
		} else if st.Count == *r.Max+1 {
			e.raise(r, device, &n, at)
		}
	}
}

// closeWindow ends a rate window: too few messages raises, a window within
// bounds clears. The next window starts at next.
func (e *Engine) closeWindow(r *devices.Rule, k key, st *devices.RuleState, next int64) {
	n := float64(st.Count)
	end := st.Window + time.Duration(r.Interval).Milliseconds()
	low := r.Min != nil && st.Count < *r.Min
	high := r.Max != nil && st.Count > *r.Max
	if next > end && r.Min != nil && *r.Min > 0 {
		low, n = true, 0 // whole windows went by without a message
	}
	a := e.open[k]
	switch {
	case low && a == nil:
		e.raise(r, k.device, &n, end)
	case low:
		a.Count++
		a.LastValue, a.LastAt, a.Updated = &n, end, e.Now().UnixMilli()
		if a.ID != 0 {
			e.step.updated[a] = true
		}
	case !high && a != nil:
		e.clear(k, a, &n, end)
	}
	st.Window, st.Count = next, 0
	e.step.states[k] = true
}

// onTick runs the timer rules at now (Unix ms).
func (e *Engine) onTick(now int64) {
	set := e.rules.Load()
	// Thresholds that have held long enough without a new reading.
	for k, st := range e.states {
		r := set.active(k.rule)
		if r == nil {
			continue
		}
		switch r.Kind {
		case devices.RuleThreshold:
			if st.Since > 0 && e.open[k] == nil && now-st.Since >= time.Duration(r.For).Milliseconds() {
				delete(e.states, k)
				e.step.states[k] = true
				e.raise(r, k.device, st.Value, now)
			}
		case devices.RuleRate:
			if now >= st.Window+time.Duration(r.Interval).Milliseconds() {
				iv := time.Duration(r.Interval).Milliseconds()
				e.closeWindow(r, k, st, now-now%iv)
			}
		}
	}
	if len(set.inactivity)+len(set.status) == 0 && !hasMinRate(set) {
		return
	}
	for _, d := range e.Activity() {
		for _, r := range set.inactivity {
			if !r.Matches(d.ID) {
				continue
			}
			e.evaluated.Add(1)
			k := key{r.ID, d.ID}
			silent := d.LastSeen > 0 && now-d.LastSeen >= time.Duration(r.For).Milliseconds()
			if a := e.open[k]; silent && a == nil {
				e.raise(r, d.ID, nil, now)
			} else if !silent && a != nil {
				e.clear(k, a, nil, now)
			}
		}
		for _, r := range set.status {
			if !r.Matches(d.ID) {
				continue
			}
			e.evaluated.Add(1)
			k := key{r.ID, d.ID}
			offline := d.Status == "offline" && now-d.StatusAt >= time.Duration(r.For).Milliseconds()
			if a := e.open[k]; offline && a == nil {
				e.raise(r, d.ID, nil, now)
			} else if d.Status != "offline" && a != nil {
				e.clear(k, a, nil, now)
			}
		}
		// A rate rule with a minimum watches devices that send nothing.
		set.rate.each(d.ID, func(r *devices.Rule) {
			k := key{r.ID, d.ID}
			if r.Min == nil || e.states[k] != nil {
				return
			}
			iv := time.Duration(r.Interval).Milliseconds()
			e.states[k] = &devices.RuleState{Rule: r.ID, Device: d.ID, Window: now - now%iv}
			e.step.states[k] = true
		})
	}
}

func hasMinRate(set *ruleSet) bool {
	for _, rs := range set.rate.exact {
		for _, r := range rs {
			if r.Min != nil {
				return true
			}
		}
	}
	for _, r := range set.rate.prefix {
		if r.Min != nil {
			return true
		}
	}
	return false
}

func (e *Engine) raise(r *devices.Rule, device string, v *float64, at int64) {
	now := e.Now().UnixMilli()
	a := &devices.Alert{RuleID: r.ID, Rule: r.Name, Kind: r.Kind, Device: device, Severity: r.Severity, Status: devices.AlertActive,
		Message: r.Describe(v), Metric: r.Metric, FirstValue: v, FirstAt: at, LastValue: v, LastAt: at, Count: 1, Created: now, Updated: now}
	e.open[key{r.ID, device}] = a
	e.step.raised = append(e.step.raised, a)
}

func (e *Engine) clear(k key, a *devices.Alert, v *float64, at int64) {
	now := e.Now().UnixMilli()
	a.Status, a.ClearedBy, a.ClearedAt, a.Updated = devices.AlertCleared, "hub", now, now
	if v != nil {
		a.LastValue, a.LastAt = v, at
	}
	delete(e.open, k)
	delete(e.step.updated, a)
	e.step.cleared = append(e.step.cleared, a)
}

// save writes the pending step: at once when it changes alerts or states
// (or force), the position alone at most once a second. It reports
// whether the step was saved; on failure the evaluator reloads from the
// store and evaluates again from the saved position.
func (e *Engine) save(ctx context.Context, force bool) bool {
	if e.step.empty() && (!e.step.seqMoved || !force && time.Since(e.saved) < time.Second) {
		return true
	}
	set := e.rules.Load()
	step := &devices.AlertStep{Seq: e.cursor, Raised: e.step.raised, Cleared: e.step.cleared,
		Webhooks: set.receivers, Payload: Payload}
	for a := range e.step.updated {
		step.Updated = append(step.Updated, a)
	}
	for k := range e.step.states {
		if st := e.states[k]; st != nil {
			step.States = append(step.States, *st)
		} else {
			step.Dropped = append(step.Dropped, devices.RuleState{Rule: k.rule, Device: k.device})
		}
	}
	gone, err := e.Store.SaveAlertStep(ctx, step)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			e.Logger.Error("alerts: cannot save; evaluating again from the saved position", "error", err)
		}
		e.loaded = false
		if e.sub != nil {
			e.sub.Close()
			e.sub = nil
		}
		return false
	}
	e.saved = time.Now()
	for _, id := range gone {
		e.dropAlert(id)
	}
	e.step = pending{updated: map[*devices.Alert]bool{}, states: map[key]bool{}}
	changed := len(step.Raised)+len(step.Cleared) > 0
	if e.OnChange != nil {
		for _, a := range step.Raised {
			if a.Status == devices.AlertActive {
				e.OnChange(*a)
			}
		}
		for _, a := range step.Cleared {
			if !contains(gone, a.ID) {
				e.OnChange(*a)
			}
		}
	}
	if changed && e.OnSaved != nil {
		e.OnSaved()
	}
	return true
}

func contains(list []int64, id int64) bool {
	for _, v := range list {
		if v == id {
			return true
		}
	}
	return false
}

// Payload is the body of a webhook delivery: the change (event), its
// idempotency key, and the alert as it was then.
func Payload(a *devices.Alert, ev devices.AlertEvent, key string) []byte {
	snap := *a
	snap.History, snap.Deliveries = nil, nil
	b, _ := json.Marshal(struct {
		Event devices.AlertStatus `json:"event"`
		Key   string              `json:"key"`
		At    int64               `json:"at"`
		By    string              `json:"by,omitempty"`
		Note  string              `json:"note,omitempty"`
		Alert devices.Alert       `json:"alert"`
	}{ev.Status, key, ev.At, ev.By, ev.Note, snap})
	return b
}
