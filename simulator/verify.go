package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/telehub/telehub/devices"
)

// verifier watches the hub's WebSocket while the fleet publishes, then reads
// back what the hub stored. It starts at the hub's current sequence number,
// so that only this run's messages count, and after a dropped connection
// (a hub restart) it resumes with since= the last sequence number it saw,
// as a browser does.
type verifier struct {
	f        *fleet
	base     *url.URL
	startSeq int64
	lastSeq  atomic.Int64
	e2e      *recorder

	mu        sync.Mutex
	live      map[devSeq]int
	lastByDev map[string]uint64
	reordered int64

	stop chan struct{}
	done chan struct{}
}

type devSeq struct {
	device string
	seq    uint64
}

// frame is one frame of the hub's WebSocket, asked for with batch=1: a
// "messages" frame carries several messages.
type frame struct {
	Type     string    `json:"type"`
	Messages []message `json:"messages"`
}

// message is one message in a frame.
type message struct {
	Seq     int64           `json:"seq"`
	Device  string          `json:"device"`
	Topic   string          `json:"topic"`
	Payload json.RawMessage `json:"payload"`
}

func newVerifier(ctx context.Context, f *fleet) (*verifier, error) {
	base, err := url.Parse(strings.TrimRight(f.cfg.HubURL, "/"))
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("--hub %q: want http://host:port", f.cfg.HubURL)
	}
	var stats struct {
		LastSeq int64 `json:"last_seq"`
	}
	if err := getJSON(ctx, base.String()+"/api/v1/stats", f.cfg.HubToken, &stats); err != nil {
		return nil, fmt.Errorf("--verify: ask the hub at %s: %w", base, err)
	}
	v := &verifier{
		f: f, base: base, startSeq: stats.LastSeq, e2e: newRecorder(),
		live: make(map[devSeq]int), lastByDev: make(map[string]uint64),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	v.lastSeq.Store(stats.LastSeq)
	conn, err := v.dial(ctx, stats.LastSeq)
	if err != nil {
		return nil, err
	}
	go v.watch(conn)
	return v, nil
}

func getJSON(ctx context.Context, u, token string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(dst)
}

func (v *verifier) dial(ctx context.Context, since int64) (*websocket.Conn, error) {
	scheme := "ws"
	if v.base.Scheme == "https" {
		scheme = "wss"
	}
	u := fmt.Sprintf("%s://%s%s/api/v1/ws?since=%d&batch=1", scheme, v.base.Host, v.base.Path, since)
	var h http.Header
	if v.f.cfg.HubToken != "" {
		h = http.Header{"Authorization": {"Bearer " + v.f.cfg.HubToken}}
	}
	conn, _, err := websocket.DefaultDialer.DialContext(ctx, u, h)
	if err != nil {
		return nil, fmt.Errorf("websocket %s: %w", u, err)
	}
	return conn, nil
}

// watch reads live frames, reconnecting with backoff after the hub goes
// away, until stop is closed.
func (v *verifier) watch(conn *websocket.Conn) {
	defer close(v.done)
	go func() { <-v.stop; conn.Close() }()
	backoff := 100 * time.Millisecond
	for {
		for {
			var fr frame
			if err := conn.ReadJSON(&fr); err != nil {
				break
			}
			backoff = 100 * time.Millisecond
			now := time.Now()
			for _, m := range fr.Messages {
				v.lastSeq.Store(m.Seq)
				v.observe(m, now)
			}
		}
		conn.Close()
		for {
			select {
			case <-v.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			c, err := v.dial(context.Background(), v.lastSeq.Load())
			if err == nil {
				conn = c
				go func() { <-v.stop; c.Close() }()
				break
			}
		}
	}
}

// simSeq returns the device and simulator sequence number of a frame, or
// false when it is not one of this fleet's telemetry messages.
func (v *verifier) simSeq(fr message) (*device, uint64, bool) {
	d := v.f.byID[fr.Device]
	if d == nil || fr.Topic != v.f.cfg.Scheme.Topic(fr.Device, devices.KindTelemetry) {
		return nil, 0, false
	}
	var p struct {
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(fr.Payload, &p) != nil || p.Seq == 0 {
		return nil, 0, false
	}
	return d, p.Seq, true
}

func (v *verifier) observe(fr message, at time.Time) {
	d, seq, ok := v.simSeq(fr)
	if !ok {
		return
	}
	if sent, ok := d.sentTime(seq); ok {
		v.e2e.add(at.Sub(sent))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.live[devSeq{d.id, seq}]++
	if seq < v.lastByDev[d.id] {
		v.reordered++
	}
	v.lastByDev[d.id] = max(v.lastByDev[d.id], seq)
}

func (v *verifier) close() {
	select {
	case <-v.stop:
	default:
		close(v.stop)
	}
	<-v.done
}

// finish waits until every acknowledged message was seen live (or nothing
// new arrived for 10 s), stops watching, reads back what the hub stored,
// and fills r.
func (v *verifier) finish(ctx context.Context, r *Report) error {
	var seen, lastSeen int
	idle := time.Now()
	for {
		v.mu.Lock()
		seen = len(v.live)
		v.mu.Unlock()
		if int64(seen) >= r.Acked || time.Since(idle) > 10*time.Second || ctx.Err() != nil {
			break
		}
		if seen != lastSeen {
			lastSeen, idle = seen, time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	v.close()

	stored, storedDup, err := v.readBack(ctx)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var liveDup int64
	for _, n := range v.live {
		liveDup += int64(n - 1)
	}
	r.ReceivedLive = int64(len(v.live))
	r.Stored = int64(len(stored))
	r.Duplicated = max(storedDup, liveDup)
	r.Reordered = v.reordered
	for _, d := range v.f.devices {
		for seq := uint64(1); seq <= d.seq; seq++ {
			if d.isAcked(seq) && stored[devSeq{d.id, seq}] == 0 {
				r.Lost++
			}
		}
	}
	r.E2ELatency = v.e2e.percentiles()
	return nil
}

// readBack replays everything the hub stored since the run started, through
// a fresh WebSocket, up to its replay_end frame.
func (v *verifier) readBack(ctx context.Context) (map[devSeq]int, int64, error) {
	conn, err := v.dial(ctx, v.startSeq)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	stored := make(map[devSeq]int)
	var dup int64
	for {
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		var fr frame
		if err := conn.ReadJSON(&fr); err != nil {
			return nil, 0, fmt.Errorf("read back: %w", err)
		}
		if fr.Type == "replay_end" {
			return stored, dup, nil
		}
		for _, m := range fr.Messages {
			if d, seq, ok := v.simSeq(m); ok {
				k := devSeq{d.id, seq}
				if stored[k] > 0 {
					dup++
				}
				stored[k]++
			}
		}
	}
}
