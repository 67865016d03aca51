package simulator

import (
	"bytes"
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
type copyStore struct {
	mu sync.Mutex // the stored copies are encoded (written to) when copied
	*paho.MemoryStore
}

func newCopyStore() paho.Store { return &copyStore{MemoryStore: paho.NewMemoryStore()} }

func (s *copyStore) Put(key string, m packets.ControlPacket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.MemoryStore.Put(key, clonePacket(m))
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
