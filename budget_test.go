package redispubsub

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/require"
)

// budgetSubscriber returns a Subscriber with only what pushing to its
// subscriptions needs: no connection, no server.
func budgetSubscriber(limit int64, policy OverflowPolicy) *Subscriber {
	return &Subscriber{
		config: SubscriberConfig{BufferBytes: limit, Overflow: policy},
		logger: watermill.NopLogger{},
		budget: newBudget(limit),
		drops:  make(map[string]uint64),
	}
}

// queued returns the number of messages sn holds.
func queued(sn *subscription) int {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return sn.queue.len()
}

// checkBudget checks that the budget's books agree with the subscriptions:
// what each holds, the total, the slots, and, when ordered, the heap order.
func checkBudget(t *testing.T, b *budget, sns []*subscription) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var total int64
	holders := 0
	for _, sn := range sns {
		var held int64
		for i := range sn.queue.len() {
			held += sn.queue.buf[(int(sn.queue.head)+i)%len(sn.queue.buf)].size
		}
		require.Equal(t, held, sn.holding.bytes)
		total += held
		if held == 0 {
			require.Zero(t, sn.holding.slot)
			continue
		}
		holders++
		require.Same(t, sn, b.holders[sn.holding.slot-1].sn)
		require.Equal(t, held, b.holders[sn.holding.slot-1].bytes)
	}
	require.Equal(t, total, b.used.Load())
	require.Len(t, b.holders, holders)
	if b.ordered {
		for i := 1; i < len(b.holders); i++ {
			require.GreaterOrEqual(t, b.holders[(i-1)/2].bytes, b.holders[i].bytes, "heap order at %d", i)
		}
	}
}

// The budget's heaviest is the subscription holding the most, through any
// sequence of holds, takes and drops, in and out of heap order; its books
// always agree with the queues.
func TestBudgetFindsTheHeaviestWithoutLookingAtTheOthers(t *testing.T) {
	const limit = 1 << 20
	rng := rand.New(rand.NewPCG(1, 2))
	for _, policy := range []OverflowPolicy{DropNewest, DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			s := budgetSubscriber(limit, policy)
			sns := make([]*subscription, 200)
			for i := range sns {
				sns[i] = newSubscription(s, subscriptionKey{name: fmt.Sprint("t", i)})
			}
			for step := range 20_000 {
				sn := sns[rng.IntN(len(sns))]
				switch rng.IntN(3) {
				case 0, 1:
					sn.push(&incoming{channel: sn.key.name, size: int64(1 + rng.IntN(8<<10))})
				default:
					sn.mu.Lock()
					if sn.queue.len() > 0 {
						sn.take(sn.queue.popFront())
					}
					sn.mu.Unlock()
				}
				if step%97 == 0 {
					checkBudget(t, s.budget, sns)
					var most int64
					for _, sn := range sns {
						most = max(most, sn.holding.bytes)
					}
					if top := s.budget.heaviestForTest(); most == 0 {
						require.Nil(t, top)
					} else {
						require.Equal(t, most, top.holding.bytes, "step %d", step)
					}
				}
				require.LessOrEqual(t, s.budget.used.Load(), int64(limit))
			}
			require.Positive(t, s.stats.dropped.Load(), "the budget was spent")
			for _, sn := range sns {
				sn.discard()
			}
			checkBudget(t, s.budget, sns)
			require.Zero(t, s.budget.used.Load())
		})
	}
}

// heaviestForTest returns the subscription holding the most, ordering the
// holders as a victim search does.
func (b *budget) heaviestForTest() *subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.holders) == 0 {
		return nil
	}
	b.order()
	return b.holders[0].sn
}

// A message larger than the whole budget is dropped at once, counted under
// its topic, and nobody else loses anything for it, under either policy.
// (The bug: the stalled subscription lost up to 1,024 queued messages to
// make room, and the big message was dropped anyway.)
func TestBudgetMessageLargerThanTheBudgetDropsOnlyItself(t *testing.T) {
	const limit = 1 << 20
	for _, policy := range []OverflowPolicy{DropNewest, DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			s := budgetSubscriber(limit, policy)
			stalled := newSubscription(s, subscriptionKey{name: "stalled"})
			other := newSubscription(s, subscriptionKey{name: "other"})
			const n = 1000 // of 1 KiB: the budget is nearly spent
			for range n {
				stalled.push(&incoming{channel: "stalled", size: 1 << 10})
			}
			other.push(&incoming{channel: "other", size: limit + limit/2})
			require.Equal(t, n, queued(stalled), "the stalled subscription lost messages for one that never fits")
			require.Zero(t, queued(other))
			require.Equal(t, map[string]uint64{"other": 1}, s.drops)
			checkBudget(t, s.budget, []*subscription{stalled, other})

			// One that fits the budget makes room by the policy.
			other.push(&incoming{channel: "other", size: limit / 2})
			require.Equal(t, 1, queued(other))
			require.Less(t, queued(stalled), n)
			checkBudget(t, s.budget, []*subscription{stalled, other})
		})
	}
}

// Under DropNewest a message whose own subscription would become the
// heaviest before room is made is dropped at once: the heavier ones do not
// lose messages in vain.
func TestBudgetDropNewestDropsNothingInVain(t *testing.T) {
	const limit = 1000
	s := budgetSubscriber(limit, DropNewest)
	a := newSubscription(s, subscriptionKey{name: "a"})
	b := newSubscription(s, subscriptionKey{name: "b"})
	for range 7 {
		a.push(&incoming{channel: "a", size: 100})
	}
	for range 3 {
		b.push(&incoming{channel: "b", size: 100})
	}
	// b needs 500 bytes; a can give 400 before b is the heaviest.
	b.push(&incoming{channel: "b", size: 500})
	require.Equal(t, 7, queued(a))
	require.Equal(t, 3, queued(b))
	require.Equal(t, map[string]uint64{"b": 1}, s.drops)

	// 300 bytes: a gives them, b keeps its message.
	b.push(&incoming{channel: "b", size: 300})
	require.Equal(t, 4, queued(a))
	require.Equal(t, 4, queued(b))
	require.Equal(t, map[string]uint64{"a": 3, "b": 1}, s.drops)
	checkBudget(t, s.budget, []*subscription{a, b})
}

// BenchmarkBudgetSpent pushes copies of one message to many stalled
// subscriptions of equal size with the budget spent: every copy needs a
// drop. The cost per copy grows with the logarithm of the subscriptions,
// not with their number.
func BenchmarkBudgetSpent(b *testing.B) {
	for _, n := range []int{10, 1000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			const size = 512
			limit := int64(n) * size * 8
			s := budgetSubscriber(limit, DropNewest)
			sns := make([]*subscription, n)
			for i := range sns {
				sns[i] = newSubscription(s, subscriptionKey{name: "stalled"})
			}
			in := &incoming{channel: "stalled", size: size}
			for i := 0; !s.budget.over(size); i++ {
				sns[i%n].push(in)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				sns[i%n].push(in)
			}
		})
	}
}
