package redispubsub

import (
	"errors"
	"sync"
	"sync/atomic"
)

var errBufferFull = errors.New("redispubsub: subscriber buffer full")

// heavyBytes is what a subscription holds to be a candidate for losing
// messages when the buffer is spent; lighter ones are looked at only when no
// subscription is heavy.
const heavyBytes = 64 << 10

// budget accounts for the bytes that a Subscriber's subscriptions hold.
type budget struct {
	limit int64
	used  atomic.Int64

	mu    sync.Mutex
	heavy map[*subscription]struct{}
}

func newBudget(limit int64) *budget {
	return &budget{limit: limit, heavy: make(map[*subscription]struct{})}
}

// over reports whether size more bytes would exceed the budget.
func (b *budget) over(size int64) bool { return b.used.Load()+size > b.limit }

// forget removes sn from the heavy subscriptions.
func (b *budget) forget(sn *subscription) { b.markHeavy(sn, false) }

// markHeavy adds sn to the heavy subscriptions, or removes it. Called with
// sn.mu held.
func (b *budget) markHeavy(sn *subscription, heavy bool) {
	b.mu.Lock()
	if heavy {
		b.heavy[sn] = struct{}{}
	} else {
		delete(b.heavy, sn)
	}
	b.mu.Unlock()
}

// heaviest returns the heavy subscription holding the most bytes, or nil
// when none is heavy.
func (b *budget) heaviest() *subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	var most *subscription
	var bytes int64
	for sn := range b.heavy {
		if held := sn.held.Load(); held > bytes {
			most, bytes = sn, held
		}
	}
	return most
}

// heaviest returns the subscription holding the most bytes, or nil when
// none holds any. Only when no subscription is heavy (the buffer is spent
// by more than BufferBytes/heavyBytes light ones) does it look at them all.
func (s *Subscriber) heaviest() *subscription {
	if sn := s.budget.heaviest(); sn != nil {
		return sn
	}
	s.mu.Lock()
	conns := make([]*connection, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var most *subscription
	var bytes int64
	for _, c := range conns {
		c.mu.Lock()
		for _, table := range []map[string]*channelState{c.channels, c.patterns} {
			for _, st := range table {
				for _, sn := range st.subs {
					if held := sn.held.Load(); held > bytes {
						most, bytes = sn, held
					}
				}
			}
		}
		c.mu.Unlock()
	}
	return most
}

// maxDropsPerMessage bounds the messages dropped to make room for one.
const maxDropsPerMessage = 1024

// makeRoom drops messages of the heaviest subscriptions, by the overflow
// policy, until size more bytes fit in the budget. It reports false when the
// arriving message itself is to be dropped: sn is the heaviest and the
// policy is DropNewest, or nothing else can make room.
func (s *Subscriber) makeRoom(sn *subscription, size int64) bool {
	policy := s.config.Overflow
	for range maxDropsPerMessage {
		if !s.budget.over(size) {
			return true
		}
		victim := s.heaviest()
		if victim == nil || (victim == sn && policy == DropNewest) {
			return false
		}
		victim.dropOne(policy)
	}
	return !s.budget.over(size)
}
