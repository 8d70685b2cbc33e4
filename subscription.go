package redispubsub

import (
	"context"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// subscription is one consumer of one topic or pattern: a bounded queue that
// the Subscriber's reader fills without ever blocking, and a goroutine that
// hands the queued messages to the consumer one at a time, waiting for each
// Ack.
type subscription struct {
	key    subscriptionKey
	sub    *Subscriber
	logger watermill.LoggerAdapter

	out chan *message.Message

	// ctx ends the subscription; it is set when the consumer attaches (a
	// subscription made by SubscribeInitialize has none until then).
	ctx    context.Context
	cancel context.CancelFunc

	// joinToken names the PING this subscription waits for, if any, and
	// ready is closed once it receives what is published. Guarded by the
	// Subscriber's mu.
	joinToken string
	ready     chan struct{}

	mu         sync.Mutex
	queue      ring
	ended      bool
	wake       chan struct{} // capacity 1: the queue got a message
	dropsToLog uint64
	lastDropAt time.Time
}

func newSubscription(s *Subscriber, key subscriptionKey) *subscription {
	return &subscription{
		key:    key,
		sub:    s,
		logger: s.logger.With(watermill.LogFields{"topic": key.name, "pattern": key.pattern}),
		out:    make(chan *message.Message),
		queue:  newRing(s.config.QueueSize),
		wake:   make(chan struct{}, 1),
	}
}

// push queues in without blocking, applying the overflow policy.
func (sn *subscription) push(in *incoming) {
	sn.mu.Lock()
	if sn.ended {
		sn.mu.Unlock()
		return
	}
	dropped := false
	if sn.queue.full() {
		dropped = true
		if sn.sub.config.Overflow == DropNewest {
			sn.noteDrop(in)
			sn.mu.Unlock()
			return
		}
		sn.noteDrop(sn.queue.pop())
	}
	sn.queue.push(in)
	sn.mu.Unlock()
	if !dropped {
		select {
		case sn.wake <- struct{}{}:
		default:
		}
	}
}

// dropLogInterval bounds how often a subscription logs its drops: a stalled
// consumer on a busy topic would otherwise log every message.
const dropLogInterval = time.Second

// noteDrop counts a dropped message and logs drops at most once per
// dropLogInterval, with the count since the last log. Called with mu held.
func (sn *subscription) noteDrop(in *incoming) {
	sn.sub.stats.dropped.Add(1)
	sn.dropsToLog++
	if now := time.Now(); now.Sub(sn.lastDropAt) >= dropLogInterval {
		sn.logger.Error("Subscription queue full, messages dropped", errQueueFull, watermill.LogFields{
			"dropped":    sn.dropsToLog,
			"queue_size": sn.queue.capacity(),
			"policy":     sn.sub.config.Overflow.String(),
			"channel":    in.channel,
		})
		sn.dropsToLog = 0
		sn.lastDropAt = now
	}
}

// next waits for a queued message; ok is false when the subscription ended.
func (sn *subscription) next() (in *incoming, ok bool) {
	for {
		sn.mu.Lock()
		if sn.queue.len() > 0 {
			in = sn.queue.pop()
			sn.mu.Unlock()
			return in, true
		}
		sn.mu.Unlock()
		select {
		case <-sn.wake:
		case <-sn.ctx.Done():
			return nil, false
		}
	}
}

// run delivers queued messages until the subscription's context ends, then
// closes the output channel and leaves the topic.
func (sn *subscription) run() {
	defer sn.sub.wg.Done()
	defer sn.finish()
	for {
		in, ok := sn.next()
		if !ok {
			return
		}
		msg, err := in.decode(sn.sub)
		if err != nil {
			continue // counted and logged by decode
		}
		if !sn.deliver(msg, in.shared) {
			return
		}
	}
}

// deliver sends msg to the consumer and waits for its Ack, redelivering a
// fresh copy after each Nack. It reports false when the subscription ended
// first.
func (sn *subscription) deliver(msg *message.Message, shared bool) bool {
	stats := &sn.sub.stats
	for first := true; ; first = false {
		// A Nacked message cannot be Acked again, and consumers of one
		// topic must not share Ack state: every attempt but the first of
		// an unshared message gets a copy.
		attempt := msg
		if shared || !first {
			attempt = msg.Copy()
		}
		ctx, cancel := context.WithCancel(sn.ctx)
		attempt.SetContext(ctx)
		select {
		case sn.out <- attempt:
			stats.delivered.Add(1)
		case <-sn.ctx.Done():
			cancel()
			stats.discarded.Add(1)
			return false
		}
		select {
		case <-attempt.Acked():
			cancel()
			stats.acked.Add(1)
			return true
		case <-attempt.Nacked():
			cancel()
			stats.nacked.Add(1)
			if !sn.sleep(sn.sub.config.NackResendSleep) {
				stats.discarded.Add(1)
				return false
			}
		case <-sn.ctx.Done():
			cancel()
			stats.discarded.Add(1)
			return false
		}
	}
}

// sleep waits for d unless the subscription ends first.
func (sn *subscription) sleep(d time.Duration) bool {
	if d <= 0 {
		return sn.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-sn.ctx.Done():
		return false
	}
}

// finish closes the output channel, counts what was left in the queue and
// removes the subscription from its topic.
func (sn *subscription) finish() {
	sn.mu.Lock()
	sn.ended = true
	left := sn.queue.len()
	sn.queue = ring{}
	sn.mu.Unlock()
	sn.sub.stats.discarded.Add(uint64(left))
	sn.sub.leave(sn)
	close(sn.out)
	sn.logger.Debug("Subscription ended", watermill.LogFields{"discarded": left})
}

// ring is a fixed-capacity FIFO of received messages.
type ring struct {
	buf        []*incoming
	head, size int
}

func newRing(capacity int) ring { return ring{buf: make([]*incoming, capacity)} }

func (r *ring) len() int      { return r.size }
func (r *ring) capacity() int { return len(r.buf) }
func (r *ring) full() bool    { return r.size == len(r.buf) }

func (r *ring) push(m *incoming) {
	r.buf[(r.head+r.size)%len(r.buf)] = m
	r.size++
}

func (r *ring) pop() *incoming {
	m := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return m
}
