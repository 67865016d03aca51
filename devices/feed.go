package devices

import (
	"errors"
	"sync"
)

// ErrLagged is the reason a Subscription ends when its buffer filled up: its
// reader fell behind and must resynchronise from the store.
var ErrLagged = errors.New("subscriber fell behind")

// Feed fans committed messages out to live subscribers (WebSocket clients).
// Publish never blocks: a subscriber whose buffer is full is dropped with
// ErrLagged, so a slow reader can never stall ingestion or other readers.
// A subscriber of one device (SubscribeDevice) receives only that device's
// messages and is not woken for the others: a thousand dashboards each
// following one device cost a batch no more than the devices in it.
// The zero value is ready to use.
type Feed struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}            // every device
	bydev  map[string]map[*Subscription]struct{} // one device each
	closed bool
}

// Subscription receives batches of committed messages in sequence order.
type Subscription struct {
	feed   *Feed
	device string // "" for every device
	c      chan []Message
	err    error // set before c is closed; guarded by feed.mu
}

// Subscribe registers a subscriber that buffers up to buf batches. It returns
// ErrClosed once the Feed is closed.
func (f *Feed) Subscribe(buf int) (*Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	if f.subs == nil {
		f.subs = make(map[*Subscription]struct{})
	}
	s := &Subscription{feed: f, c: make(chan []Message, max(buf, 1))}
	f.subs[s] = struct{}{}
	return s, nil
}

// SubscribeDevice is Subscribe for the messages of one device only.
func (f *Feed) SubscribeDevice(device string, buf int) (*Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	if f.bydev == nil {
		f.bydev = make(map[string]map[*Subscription]struct{})
	}
	set := f.bydev[device]
	if set == nil {
		set = make(map[*Subscription]struct{})
		f.bydev[device] = set
	}
	s := &Subscription{feed: f, device: device, c: make(chan []Message, max(buf, 1))}
	set[s] = struct{}{}
	return s, nil
}

// Publish hands batch to every subscriber, and to each device subscriber
// the part of batch that is its device's. batch must not be modified
// afterwards: subscribers share it.
func (f *Feed) Publish(batch []Message) {
	if len(batch) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		f.sendLocked(s, batch)
	}
	if len(f.bydev) == 0 {
		return
	}
	if len(batch) == 1 || sameDevice(batch) {
		for s := range f.bydev[batch[0].Device] {
			f.sendLocked(s, batch)
		}
		return
	}
	parts := map[string][]Message{}
	for i := range batch {
		if _, ok := f.bydev[batch[i].Device]; ok {
			parts[batch[i].Device] = append(parts[batch[i].Device], batch[i])
		}
	}
	for device, part := range parts {
		for s := range f.bydev[device] {
			f.sendLocked(s, part)
		}
	}
}

func sameDevice(batch []Message) bool {
	for i := 1; i < len(batch); i++ {
		if batch[i].Device != batch[0].Device {
			return false
		}
	}
	return true
}

func (f *Feed) sendLocked(s *Subscription, batch []Message) {
	select {
	case s.c <- batch:
	default:
		f.dropLocked(s, ErrLagged)
	}
}

// Len returns the number of subscribers.
func (f *Feed) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.subs)
	for _, set := range f.bydev {
		n += len(set)
	}
	return n
}

// Close ends every subscription with ErrClosed and refuses new ones.
func (f *Feed) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for s := range f.subs {
		f.dropLocked(s, ErrClosed)
	}
	for _, set := range f.bydev {
		for s := range set {
			f.dropLocked(s, ErrClosed)
		}
	}
}

func (f *Feed) dropLocked(s *Subscription, err error) {
	set := f.subs
	if s.device != "" {
		set = f.bydev[s.device]
	}
	if _, ok := set[s]; !ok {
		return
	}
	delete(set, s)
	if s.device != "" && len(set) == 0 {
		delete(f.bydev, s.device)
	}
	s.err = err
	close(s.c)
}

// C returns the channel of batches. It is closed when the subscription ends;
// Err then tells why.
func (s *Subscription) C() <-chan []Message { return s.c }

// Err returns why the subscription ended: ErrLagged, ErrClosed, or nil while
// it is active or after Close.
func (s *Subscription) Err() error {
	s.feed.mu.Lock()
	defer s.feed.mu.Unlock()
	return s.err
}

// Close unsubscribes. It is safe to call more than once and after the
// subscription ended.
func (s *Subscription) Close() {
	s.feed.mu.Lock()
	defer s.feed.mu.Unlock()
	s.feed.dropLocked(s, nil)
}
