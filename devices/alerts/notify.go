package alerts

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/telehub/telehub/devices"
)

// Notifier delivers the webhook outbox: every delivery the store holds as
// pending, at least once, each receiver by a worker of its own so that one
// that hangs or fails never holds up another. Every attempt is recorded.
//
// A request is a POST of the delivery's JSON with these headers:
//
//	Idempotency-Key: telehub-alert-{alert}-{event}   (the same on every retry)
//	X-Telehub-Event: active | acknowledged | cleared
//	X-Telehub-Signature: t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{body}"}
//
// The receiver checks the signature with the hub's webhook secret and
// answers 2xx; anything else, or no answer within Timeout, is retried with
// exponential backoff until MaxAge has gone by.
type Notifier struct {
	Store  devices.AlertStore
	Secret []byte
	// Client sends the requests (default: Timeout, no redirects followed).
	Client *http.Client
	// Timeout bounds one attempt (default 10 s); MaxAge the retries of a
	// delivery (default 24 h); MaxBackoff the wait between two (default
	// 10 min).
	Timeout, MaxAge, MaxBackoff time.Duration
	// Leader, when set, tells whether this hub delivers (see Engine).
	Leader func() bool
	// OnAttempt observes each attempt's result ("delivered", "retry",
	// "failed") and duration.
	OnAttempt func(result string, d time.Duration)
	UserAgent string
	Logger    *slog.Logger
	Now       func() time.Time

	once    sync.Once
	wake    chan struct{}
	mu      sync.Mutex
	workers map[string]*receiver
	wg      sync.WaitGroup
}

type receiver struct {
	url  string
	wake chan struct{}
}

// maxReceivers bounds the receivers served at once (each has a goroutine).
const maxReceivers = 1000

func (n *Notifier) init() {
	n.once.Do(func() {
		n.wake = make(chan struct{}, 1)
		n.workers = map[string]*receiver{}
		if n.Timeout <= 0 {
			n.Timeout = 10 * time.Second
		}
		if n.MaxAge <= 0 {
			n.MaxAge = 24 * time.Hour
		}
		if n.MaxBackoff <= 0 {
			n.MaxBackoff = 10 * time.Minute
		}
		if n.Client == nil {
			n.Client = &http.Client{Timeout: n.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		}
		if n.Logger == nil {
			n.Logger = slog.New(slog.DiscardHandler)
		}
		if n.Now == nil {
			n.Now = time.Now
		}
	})
}

// Wake makes Run look for due deliveries now (after a step saved some).
func (n *Notifier) Wake() {
	n.init()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends, and waits for its workers.
func (n *Notifier) Run(ctx context.Context) {
	n.init()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	defer n.wg.Wait()
	for {
		if n.Leader == nil || n.Leader() {
			n.dispatch(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.wake:
		}
	}
}

// dispatch wakes the worker of every receiver with due deliveries.
func (n *Notifier) dispatch(ctx context.Context) {
	urls, err := n.Store.DueReceivers(ctx, n.Now().UnixMilli(), maxReceivers)
	if err != nil {
		if ctx.Err() == nil {
			n.Logger.Error("webhooks: cannot read the outbox", "error", err)
		}
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range urls {
		w := n.workers[u]
		if w == nil {
			w = &receiver{url: u, wake: make(chan struct{}, 1)}
			n.workers[u] = w
			n.wg.Add(1)
			go func() { defer n.wg.Done(); n.serve(ctx, w) }()
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// serve delivers one receiver's due deliveries in order, one at a time,
// and leaves when it has had nothing to do for a while.
func (n *Notifier) serve(ctx context.Context, w *receiver) {
	idle := time.NewTimer(time.Minute)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-idle.C:
			n.mu.Lock()
			select {
			case <-w.wake: // woken meanwhile: stay
				n.mu.Unlock()
			default:
				delete(n.workers, w.url)
				n.mu.Unlock()
				return
			}
		}
		n.drain(ctx, w)
		idle.Reset(time.Minute)
	}
}

// drain sends a receiver's due deliveries, one at a time and in order,
// until none is left. The attempts of each batch are recorded together
// (one commit, not one per request) while the next batch goes out: the
// record of a batch waits for a commit, the next request need not. A
// delivery is sent at most once per drain: a read of the outbox made
// before its record committed still shows it pending. What failed goes
// again at a later wake-up, when its time has come.
func (n *Notifier) drain(ctx context.Context, w *receiver) {
	var mu sync.Mutex
	sent := map[int64]bool{}
	var recording chan struct{} // closed when the previous batch is recorded
	failed := false
	defer func() {
		if recording != nil {
			<-recording
		}
	}()
	for ctx.Err() == nil {
		list, err := n.Store.DueDeliveries(ctx, w.url, n.Now().UnixMilli(), 64)
		if err != nil {
			return
		}
		mu.Lock()
		list = slices.DeleteFunc(list, func(d devices.Delivery) bool { return sent[d.ID] })
		stop := failed
		mu.Unlock()
		if stop {
			return // the store is failing: next wake-up
		}
		if len(list) == 0 {
			if recording == nil {
				return
			}
			<-recording // what it records may make more due (none, usually)
			recording = nil
			continue
		}
		results := make([]devices.DeliveryResult, 0, len(list))
		for i := range list {
			r, ok := n.deliver(ctx, &list[i])
			if !ok {
				break
			}
			results = append(results, r)
		}
		if len(results) == 0 {
			return
		}
		if recording != nil {
			<-recording // one batch being recorded at a time, in order
		}
		mu.Lock()
		for _, r := range results {
			sent[r.ID] = true
		}
		mu.Unlock()
		done := make(chan struct{})
		recording = done
		go func() {
			defer close(done)
			err := n.Store.RecordDeliveries(context.WithoutCancel(ctx), results)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				// Sent but not recorded: they go again, with the same keys.
				n.Logger.Error("webhooks: cannot record attempts", "url", w.url, "error", err)
				failed = true
			}
		}()
	}
}

// deliver makes one attempt and says what to record; false when the hub
// is stopping (the delivery stays pending, for the next start).
func (n *Notifier) deliver(ctx context.Context, d *devices.Delivery) (devices.DeliveryResult, bool) {
	start := n.Now()
	code, errText := n.post(ctx, d)
	took := time.Since(start)
	if ctx.Err() != nil {
		return devices.DeliveryResult{}, false
	}
	att := devices.DeliveryAttempt{At: start.UnixMilli(), Code: code, Error: errText, Millis: took.Milliseconds()}
	status, next, result := devices.DeliveryDelivered, int64(0), "delivered"
	if code < 200 || code > 299 {
		status, result = devices.DeliveryPending, "retry"
		next = n.Now().Add(n.backoff(d.Attempts + 1)).UnixMilli()
		if time.Duration(next-d.Created)*time.Millisecond > n.MaxAge {
			status, next, result = devices.DeliveryFailed, 0, "failed"
			n.Logger.Warn("webhook: giving up", "url", d.URL, "alert", d.AlertID, "attempts", d.Attempts+1, "error", errText)
		}
	}
	if n.OnAttempt != nil {
		n.OnAttempt(result, took)
	}
	return devices.DeliveryResult{ID: d.ID, Attempt: att, Status: status, NextAt: next}, true
}

// backoff is the wait before attempt n+1: 1 s, 2 s, 4 s ... up to
// MaxBackoff, with ±20% jitter so that retries of many alerts spread.
func (n *Notifier) backoff(attempts int) time.Duration {
	d := n.MaxBackoff
	if attempts < 30 {
		d = min(time.Duration(1<<(attempts-1))*time.Second, n.MaxBackoff)
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// post sends d once: the HTTP status, or 0 and why none came.
func (n *Notifier) post(ctx context.Context, d *devices.Delivery) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, n.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Payload))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	if n.UserAgent != "" {
		req.Header.Set("User-Agent", n.UserAgent)
	}
	req.Header.Set("Idempotency-Key", d.Key)
	req.Header.Set("X-Telehub-Event", string(d.Event))
	req.Header.Set("X-Telehub-Delivery", strconv.FormatInt(d.ID, 10))
	req.Header.Set("X-Telehub-Signature", Sign(n.Secret, n.Now().Unix(), d.Payload))
	resp, err := n.Client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, resp.Status
	}
	return resp.StatusCode, ""
}

// Sign returns the X-Telehub-Signature header for body sent at t.
func Sign(secret []byte, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a signature header against body with secret, and that it
// is at most maxAge old (receivers, tests).
func Verify(secret []byte, header string, body []byte, now time.Time, maxAge time.Duration) bool {
	var ts, sig string
	for _, part := range bytes.Split([]byte(header), []byte{','}) {
		k, v, _ := bytes.Cut(part, []byte{'='})
		switch string(k) {
		case "t":
			ts = string(v)
		case "v1":
			sig = string(v)
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(t, 0)).Abs() > maxAge {
		return false
	}
	want := Sign(secret, t, body)
	return hmac.Equal([]byte(want), []byte("t="+ts+",v1="+sig))
}
