package broker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// connState is what the hub knows of one accepted connection.
type connState struct {
	device string   // the device it authenticated as, or "" (anonymous)
	acks   ackOrder // its acknowledgements, in order

	established atomic.Bool // its CONNACK was written (OnSessionEstablished)

	// Only the client's own goroutine touches seen (its packet reads, then
	// OnDisconnect).
	seen map[string]struct{} // devices it carries, for presence (bounded)

	cmdDevices []string // devices whose commands it listens to (guarded by downlink.mu)
}

// registry maps each connection mochi accepted to its connState: from the
// authentication hook, which adds it, to the session hook's OnDisconnect,
// which removes it. mochi calls no hook when writing the CONNACK fails, so
// sweep drops the entries of connections that closed before their session
// was established.
type registry struct{ m sync.Map } // *mqtt.Client -> *connState

func (r *registry) add(cl *mqtt.Client, st *connState) { r.m.Store(cl, st) }
func (r *registry) remove(cl *mqtt.Client)             { r.m.Delete(cl) }

func (r *registry) get(cl *mqtt.Client) *connState {
	if v, ok := r.m.Load(cl); ok {
		return v.(*connState)
	}
	return nil
}

// device returns the device cl authenticated as, or "".
func (r *registry) device(cl *mqtt.Client) string {
	if st := r.get(cl); st != nil {
		return st.device
	}
	return ""
}

// each calls fn for every connection.
func (r *registry) each(fn func(*mqtt.Client, *connState)) {
	r.m.Range(func(k, v any) bool { fn(k.(*mqtt.Client), v.(*connState)); return true })
}

// sweepInterval is how often connections that never got their CONNACK are
// forgotten.
const sweepInterval = 10 * time.Second

// sweep runs until ctx is done, forgetting every sweepInterval the
// connections that closed before their session was established.
func (r *registry) sweep(ctx context.Context) {
	tick := time.NewTicker(sweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now().Unix()
		r.each(func(cl *mqtt.Client, st *connState) {
			if !st.established.Load() && cl.Closed() && now-cl.StopTime() >= int64(sweepInterval/time.Second) {
				r.remove(cl)
			}
		})
	}
}
