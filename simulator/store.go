package simulator

import (
	"bytes"
	"cmp"
	"slices"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// copyStore is paho's memory store, keeping private copies. paho stores the
// very packet it then sends, and when it resumes a persistent session it
// sets the DUP flag on the stored packet while an earlier connection's
// writer may still be encoding it (encoding writes to the packet too): a
// data race the race detector reports in the hub-restart test. Put stores a
// copy, made before paho hands the packet to its writer, and Get returns a
// copy of that copy, so no packet is ever shared between goroutines.
//
// All returns the keys in the order they were stored: paho resends a
// resumed session's messages in the order All gives, and its MemoryStore
// gives map order, so a device would resend its unacknowledged messages
// shuffled after a reconnect (seen as reordered messages in the hub-restart
// test).
type copyStore struct {
	mu sync.Mutex // the stored copies are encoded (written to) when copied
	*paho.MemoryStore

	order map[string]uint64 // key -> when it was stored
	next  uint64
}

func newCopyStore() paho.Store {
	return &copyStore{MemoryStore: paho.NewMemoryStore(), order: make(map[string]uint64)}
}

func (s *copyStore) Put(key string, m packets.ControlPacket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.MemoryStore.Put(key, clonePacket(m))
	if _, ok := s.order[key]; !ok {
		s.next++
		s.order[key] = s.next
	}
}

// All returns the stored keys, oldest first.
func (s *copyStore) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.MemoryStore.All()
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(s.order[a], s.order[b]) })
	return keys
}

func (s *copyStore) Del(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.MemoryStore.Del(key)
	delete(s.order, key)
}

func (s *copyStore) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.MemoryStore.Reset()
	clear(s.order)
}

func (s *copyStore) Get(key string) packets.ControlPacket {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.MemoryStore.Get(key)
	if m == nil {
		return nil
	}
	return clonePacket(m)
}

// clonePacket copies a packet by encoding and decoding it.
func clonePacket(m packets.ControlPacket) packets.ControlPacket {
	var buf bytes.Buffer
	if err := m.Write(&buf); err != nil {
		return m
	}
	cp, err := packets.ReadPacket(&buf)
	if err != nil {
		return m
	}
	return cp
}
