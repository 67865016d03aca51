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
// The zero value is ready to use.
type Feed struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
}

// Subscription receives batches of committed messages in sequence order.
type Subscription struct {
	feed *Feed
	c    chan []Message
	err  error // set before c is closed; guarded by feed.mu
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

// Publish hands batch to every subscriber. batch must not be modified
// afterwards: subscribers share it.
func (f *Feed) Publish(batch []Message) {
	if len(batch) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		select {
		case s.c <- batch:
		default:
			f.dropLocked(s, ErrLagged)
		}
	}
}

// Len returns the number of subscribers.
func (f *Feed) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// Close ends every subscription with ErrClosed and refuses new ones.
func (f *Feed) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for s := range f.subs {
		f.dropLocked(s, ErrClosed)
	}
}

func (f *Feed) dropLocked(s *Subscription, err error) {
	if _, ok := f.subs[s]; !ok {
		return
	}
	delete(f.subs, s)
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
