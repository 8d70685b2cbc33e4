package redispubsub

import (
	"errors"
	"sync"
	"sync/atomic"
)

var errBufferFull = errors.New("redispubsub: subscriber buffer full")

// budget accounts for the bytes that a Subscriber's subscriptions hold, and
// knows which one holds the most without looking at them all. When the
// budget is spent, the reader asks it whom to drop from for every queued
// copy of every message: walking every subscription there (thousands of
// stalled subscriptions of one topic) made the reader fall behind Redis.
//
// The subscriptions that hold bytes are kept in one slice, with what each
// holds. While the budget has room, its order does not matter and hold and
// release cost O(1). The first time a victim is asked for, the slice is made
// a max-heap keyed by the bytes held (O(n), once), and it is kept in heap
// order on every hold and release (O(log n)) until what is held falls under
// half the budget: the order is paid for only while drops may be needed.
//
// Lock order: a subscription's mu, then the budget's mu. The budget never
// locks a subscription.
type budget struct {
	limit int64
	used  atomic.Int64 // the sum of what the holders hold; read without mu

	mu sync.Mutex
	// holders are the subscriptions that hold bytes; a subscription's
	// holding.slot is its index plus one. While ordered, they form a
	// max-heap: the one holding the most first.
	holders []holder
	ordered bool
}

// holder is a subscription that holds bytes, and how many. The count is
// kept here, not only in the subscription, so that ordering the heap reads
// one slice.
type holder struct {
	bytes int64
	sn    *subscription
}

// holding is a subscription's part in its Subscriber's budget. Written with
// both the subscription's mu and the budget's mu held: either lock is enough
// to read it.
type holding struct {
	bytes int64
	slot  int // index in budget.holders plus one; 0 when it holds nothing
}

func newBudget(limit int64) *budget {
	return &budget{limit: limit}
}

// over reports whether size more bytes would exceed the budget.
func (b *budget) over(size int64) bool { return b.used.Load()+size > b.limit }

// hold counts size more bytes held by sn. Called with sn.mu held.
func (b *budget) hold(sn *subscription, size int64) {
	b.mu.Lock()
	b.used.Add(size)
	h := &sn.holding
	h.bytes += size
	if h.slot == 0 {
		b.holders = append(b.holders, holder{sn: sn})
		h.slot = len(b.holders)
	}
	i := h.slot - 1
	b.holders[i].bytes = h.bytes
	if b.ordered {
		b.up(i)
	}
	b.mu.Unlock()
}

// release counts size fewer bytes held by sn. Called with sn.mu held.
func (b *budget) release(sn *subscription, size int64) {
	b.mu.Lock()
	used := b.used.Add(-size)
	h := &sn.holding
	h.bytes -= size
	switch {
	case h.bytes <= 0:
		b.remove(sn)
	default:
		i := h.slot - 1
		b.holders[i].bytes = h.bytes
		if b.ordered {
			b.down(i)
		}
	}
	if b.ordered && used < b.limit/2 {
		b.ordered = false
	}
	b.mu.Unlock()
}

// forget releases whatever sn still holds. Called with sn.mu held, or
// before sn could hold anything.
func (b *budget) forget(sn *subscription) {
	b.mu.Lock()
	b.used.Add(-sn.holding.bytes)
	b.remove(sn)
	b.mu.Unlock()
}

// carry counts size more bytes (fewer, when negative) that no subscription
// holds in its queue: messages in flight under MaxInFlight, which cannot be
// dropped. They spend the budget, and a full budget makes the queues lose
// messages, never them.
func (b *budget) carry(size int64) { b.used.Add(size) }

// heldBy returns what sn holds. Called with sn.mu held.
func (b *budget) heldBy(sn *subscription) int64 { return sn.holding.bytes }

// order makes the holders a max-heap and keeps them so. Called with mu
// held.
func (b *budget) order() {
	if b.ordered {
		return
	}
	b.ordered = true
	for i := len(b.holders)/2 - 1; i >= 0; i-- {
		b.down(i)
	}
}

// victim returns the subscription that is to lose a message so that size
// more bytes for sn fit, by policy, or nil when they fit already. drop is
// set when the arriving message is to be dropped instead: under DropNewest
// when sn holds as much as the heaviest (a tie costs the arriving message,
// not another subscription's), or, when check is set, when dropping from
// the heavier ones could not make room before sn is the heaviest (see
// canFree).
func (b *budget) victim(sn *subscription, size int64, policy OverflowPolicy, check bool) (victim *subscription, drop bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	need := b.used.Load() + size - b.limit
	if need <= 0 {
		return nil, false
	}
	if len(b.holders) == 0 {
		return nil, true // messages in flight spend the budget (carry)
	}
	b.order()
	top := b.holders[0]
	switch {
	case sn.holding.bytes < top.bytes:
		if policy == DropNewest && check && !b.canFree(sn.holding.bytes, need) {
			return nil, true
		}
		return top.sn, false
	case policy == DropNewest:
		return nil, true
	default:
		return sn, false
	}
}

// maxFreeVisits bounds the subscriptions canFree looks at.
const maxFreeVisits = 64

// canFree reports whether dropping messages of the subscriptions that hold
// more than floor, each down to floor, frees need bytes: what makeRoom does
// under DropNewest before the arriving message's subscription, holding
// floor, is the heaviest (and the arriving message is dropped). When it
// does not, dropping them would be in vain. It looks at the heaviest
// subscriptions only, at most maxFreeVisits of them, and says yes when that
// is not enough to tell. Called with mu held and the holders ordered.
func (b *budget) canFree(floor, need int64) bool {
	visits := 0
	// A subtree of the heap whose root holds no more than floor holds no
	// more than floor anywhere: it is skipped whole.
	stack := make([]int, 1, 2*maxFreeVisits+1)
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(b.holders) || b.holders[i].bytes <= floor {
			continue
		}
		if need -= b.holders[i].bytes - floor; need <= 0 {
			return true
		}
		if visits++; visits == maxFreeVisits {
			return true
		}
		stack = append(stack, 2*i+1, 2*i+2)
	}
	return false
}

// remove takes sn out of the holders, if it is one. Called with mu held.
func (b *budget) remove(sn *subscription) {
	h := &sn.holding
	h.bytes = 0
	if h.slot == 0 {
		return
	}
	i, last := h.slot-1, len(b.holders)-1
	h.slot = 0
	if i != last {
		b.holders[i] = b.holders[last]
		b.holders[i].sn.holding.slot = i + 1
	}
	b.holders[last] = holder{}
	b.holders = b.holders[:last]
	if i != last && b.ordered {
		b.down(i)
		b.up(i)
	}
	if cap(b.holders) > 1024 && len(b.holders) < cap(b.holders)/4 {
		b.holders = append([]holder(nil), b.holders...) // give a burst's memory back
	}
}

// up moves the holder at i towards the root while it holds more than its
// parent. Called with mu held.
func (b *budget) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if b.holders[parent].bytes >= b.holders[i].bytes {
			return
		}
		b.swap(i, parent)
		i = parent
	}
}

// down moves the holder at i away from the root while a child holds more.
// Called with mu held.
func (b *budget) down(i int) {
	for {
		most, left := i, 2*i+1
		if left < len(b.holders) && b.holders[left].bytes > b.holders[most].bytes {
			most = left
		}
		if right := left + 1; right < len(b.holders) && b.holders[right].bytes > b.holders[most].bytes {
			most = right
		}
		if most == i {
			return
		}
		b.swap(i, most)
		i = most
	}
}

func (b *budget) swap(i, j int) {
	b.holders[i], b.holders[j] = b.holders[j], b.holders[i]
	b.holders[i].sn.holding.slot = i + 1
	b.holders[j].sn.holding.slot = j + 1
}

// makeRoom drops messages of the heaviest subscriptions, by the overflow
// policy, until size more bytes for sn fit in the budget. It reports false
// when the arriving message itself is to be dropped, having dropped nothing
// in vain: when it is larger than the whole budget, or under DropNewest
// when sn would be the heaviest before there is room.
func (s *Subscriber) makeRoom(sn *subscription, size int64) bool {
	if size > s.budget.limit {
		return false // it never fits: nobody else loses anything for it
	}
	// Each round drops a message that a subscription holds (the heaviest,
	// or sn's oldest under DropOldest), and what they hold is what the
	// budget counts: room is made, or sn is the heaviest.
	for check := true; ; check = false {
		victim, drop := s.budget.victim(sn, size, s.config.Overflow, check)
		switch {
		case drop:
			return false
		case victim == nil:
			return true
		}
		victim.dropOne(s.config.Overflow)
	}
}
