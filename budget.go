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
	all   map[*subscription]struct{}
	heavy map[*subscription]struct{}
}

func newBudget(limit int64) *budget {
	return &budget{
		limit: limit,
		all:   make(map[*subscription]struct{}),
		heavy: make(map[*subscription]struct{}),
	}
}

// over reports whether size more bytes would exceed the budget.
func (b *budget) over(size int64) bool { return b.used.Load()+size > b.limit }

func (b *budget) register(sn *subscription) {
	b.mu.Lock()
	b.all[sn] = struct{}{}
	b.mu.Unlock()
}

func (b *budget) forget(sn *subscription) {
	b.mu.Lock()
	delete(b.all, sn)
	delete(b.heavy, sn)
	b.mu.Unlock()
}

func (b *budget) markHeavy(sn *subscription, heavy bool) {
	b.mu.Lock()
	if _, ok := b.all[sn]; ok && heavy {
		b.heavy[sn] = struct{}{}
	} else {
		delete(b.heavy, sn)
	}
	b.mu.Unlock()
}

// heaviest returns the subscription holding the most bytes, or nil when
// none holds any.
func (b *budget) heaviest() *subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	var most *subscription
	var bytes int64
	find := func(set map[*subscription]struct{}) {
		for sn := range set {
			if held := sn.held.Load(); held > bytes {
				most, bytes = sn, held
			}
		}
	}
	find(b.heavy)
	if most == nil {
		find(b.all)
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
		victim := s.budget.heaviest()
		if victim == nil || (victim == sn && policy == DropNewest) {
			return false
		}
		victim.dropOne(policy)
	}
	return !s.budget.over(size)
}
