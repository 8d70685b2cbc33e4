package redispubsub

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// subscriptionPhase is where a subscription stands in its Redis
// subscription. Guarded by its connection's mu.
type subscriptionPhase uint8

const (
	phaseNew      subscriptionPhase = iota
	phaseStarting                   // waits for a SUBSCRIBE not written yet, or the resubscription
	phaseWaiting                    // waits for the reply to a written command
	phaseActive                     // receives the channel's messages
	phaseEnded
)

// subscription is one consumer of one topic or pattern: a queue that the
// connection's reader fills without ever blocking, within the Subscriber's
// buffer budget, and a goroutine that hands the queued messages to the
// consumer one at a time, waiting for each Ack.
type subscription struct {
	key subscriptionKey
	sub *Subscriber

	out chan *message.Message // nil when handle takes the messages
	// handle, when set, is called with each message in place of out;
	// onEnd is called once the subscription finished (see onEnded).
	handle func(*message.Message)
	onEnd  func()
	// The subscription ends when the consumer's context ends (once
	// attached), or when end is called: the Subscriber closes, Redis
	// refused the subscription, or Subscribe gave up. end sets ending and
	// closes stop (markEnding), which every goroutine delivering its
	// messages waits on beside the consumer.
	ending atomic.Bool
	stop   chan struct{}
	// consumerCtx is the context passed to Subscribe, parent of every
	// delivered message's context; consumerDone is its Done channel. Set by
	// attach, before the delivery goroutine starts.
	consumerCtx  context.Context
	consumerDone <-chan struct{}

	// conn carries the subscription's Redis subscription; it changes only
	// when a sharded channel moves to another node.
	conn atomic.Pointer[connection]
	// Guarded by conn's mu: awaits is the written command whose reply (a
	// SUBSCRIBE's confirmation, a PING's PONG) starts it.
	state  *channelState
	phase  subscriptionPhase
	awaits *command

	// ready is closed once the subscription receives what is published, or
	// failed; failure says why it failed. Both are written once, under
	// conn.mu.
	ready   chan struct{}
	failure atomic.Pointer[error]

	// holding is the bytes queued, counted in the Subscriber's budget
	// (see budget).
	holding holding

	mu    sync.Mutex
	queue deque
	ended bool // the queue takes nothing more
	// attached is set once a consumer took the subscription; running while
	// its delivery goroutine lives (only while there are messages to hand
	// over: an idle subscription has no goroutine); finishing once its end
	// was taken care of.
	attached, running, finishing, finished bool
	stopWatch                              func() bool // stops the AfterFunc on the consumer's context
	drops                                  *dropLog    // nil until the first drop
	// flights is the state of concurrent delivery (MaxInFlight above 1)
	// while the delivery goroutine runs; nil otherwise.
	flights *flights
}

// dropLog counts the drops of a subscription since it last logged them.
type dropLog struct {
	count  uint64
	logged time.Time
}

func newSubscription(s *Subscriber, key subscriptionKey) *subscription {
	sn := &subscription{
		key:   key,
		sub:   s,
		out:   make(chan *message.Message),
		ready: make(chan struct{}),
		stop:  make(chan struct{}),
	}
	return sn
}

// end makes the subscription end: its delivery goroutine stops, or, when
// none runs, one finishes it. It may be called with a connection's mu held.
func (sn *subscription) end() {
	sn.markEnding()
	sn.mu.Lock()
	finish := sn.attached && !sn.running && !sn.finishing
	if finish {
		sn.finishing = true
	}
	sn.mu.Unlock()
	if finish {
		go sn.finish()
	}
}

// markEnding sets ending and closes stop, once.
func (sn *subscription) markEnding() {
	if sn.ending.CompareAndSwap(false, true) {
		close(sn.stop)
	}
}

// isDone reports whether the subscription is to end, or has ended. (The
// consumer's context ends it through end, called by context.AfterFunc:
// isDone does not read consumerCtx, which attach writes while a connection
// may be asking.)
func (sn *subscription) isDone() bool {
	return sn.ending.Load() || sn.sub.ctx.Err() != nil
}

// failed returns why sn failed (Redis refused it, or its connection for
// good), or nil.
func (sn *subscription) failed() error {
	if err := sn.failure.Load(); err != nil {
		return *err
	}
	return nil
}

// connection returns the connection that carries sn.
func (sn *subscription) connection() *connection { return sn.conn.Load() }

// started releases the Subscribe call waiting for sn, unless it started
// before (on another node: its channel moved). Called with conn.mu held.
func (sn *subscription) started() {
	if !isClosed(sn.ready) {
		close(sn.ready)
	}
}

// fail ends sn with err, and releases the Subscribe call waiting for it, if
// any. Called with conn.mu held.
func (sn *subscription) fail(err error) {
	sn.failure.CompareAndSwap(nil, &err)
	if !isClosed(sn.ready) {
		close(sn.ready)
	}
	sn.end()
}

// handleWith makes h.handle take sn's messages in place of the output
// channel. Called before attach.
func (sn *subscription) handleWith(h *handler) {
	if h != nil {
		sn.handle, sn.out = h.handle, nil
	}
}

// onEnded has h.ended called once sn finished: by finish, or now when it
// finished already. Called once the subscription started.
func (sn *subscription) onEnded(h *handler) {
	if h == nil {
		return
	}
	sn.mu.Lock()
	finished := sn.finished
	if !finished {
		sn.onEnd = h.ended
	}
	sn.mu.Unlock()
	if finished {
		h.ended()
	}
}

// attach ties sn to the consumer's context: the subscription ends with it.
// The Subscriber's WaitGroup counts the subscription until it finished.
// Called with the Subscriber's mu held, so that Close waits for it.
func (sn *subscription) attach(ctx context.Context) {
	s := sn.sub
	sn.consumerCtx, sn.consumerDone = ctx, ctx.Done()
	s.wg.Add(1)
	sn.mu.Lock()
	sn.attached = true
	start := sn.queue.len() > 0 // held by SubscribeInitialize
	finish := !start && sn.ending.Load() && !sn.finishing
	sn.running = start
	sn.finishing = sn.finishing || finish
	sn.mu.Unlock()
	switch {
	case start:
		go sn.run(nil)
	case finish: // ended before it was attached
		go sn.finish()
	}
	if sn.consumerDone != nil {
		stop := context.AfterFunc(ctx, sn.end)
		sn.mu.Lock()
		sn.stopWatch = stop
		sn.mu.Unlock()
	}
}

// isClosed reports whether ch is closed.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// push queues in without blocking. When the Subscriber's buffer is spent,
// the heaviest subscription loses a message first (see makeRoom); a message
// larger than the whole buffer is dropped at once; past QueueSize, sn loses
// one.
func (sn *subscription) push(in *incoming) {
	s := sn.sub
	if s.budget.over(in.size) && !s.makeRoom(sn, in.size) {
		sn.mu.Lock()
		if sn.ended {
			s.stats.discarded.Add(1)
		} else {
			sn.noteDrop(in)
		}
		sn.mu.Unlock()
		return
	}
	sn.mu.Lock()
	if sn.ended {
		// Routed while the subscription ended: counted, not silent.
		s.stats.discarded.Add(1)
		sn.mu.Unlock()
		return
	}
	if sn.attached && !sn.running && !sn.finishing && sn.queue.len() == 0 && sn.out != nil &&
		in.size <= maxDirectBytes && s.directDecode && s.config.MaxInFlight == 1 && !sn.ending.Load() {
		sn.running = true
		sn.mu.Unlock()
		sn.handDirect(in)
		return
	}
	if limit := s.config.QueueSize; limit > 0 && sn.queue.len() >= limit {
		if s.config.Overflow == DropNewest {
			sn.noteDrop(in)
			sn.mu.Unlock()
			return
		}
		sn.noteDrop(sn.take(sn.queue.popFront()))
	}
	sn.queue.pushBack(in)
	sn.hold(in.size)
	start := sn.attached && !sn.running && !sn.finishing
	if start {
		sn.running = true
	}
	if f := sn.flights; f != nil {
		f.kick()
	}
	sn.mu.Unlock()
	if start {
		go sn.run(nil)
	}
}

// maxDirectBytes bounds the messages that handDirect decodes on the reader's
// goroutine.
const maxDirectBytes = 8 << 10

// handDirect hands in to the consumer from the reader's goroutine when the
// consumer waits on the output channel and nothing is queued before it: the
// message reaches the consumer without waiting for a goroutine to be
// scheduled. The delivery goroutine then starts, to wait for its Ack. Only
// small bodies and the package's own Marshalers qualify, so that the reader
// stays fast. Called with running claimed.
func (sn *subscription) handDirect(in *incoming) {
	msg, err := in.decode(sn.sub)
	if err != nil {
		go sn.run(nil) // counted and logged by decode; run stops or finishes
		return
	}
	a := sn.newAttempt(msg, in.shared)
	select {
	case sn.out <- a.msg:
		sn.sub.stats.delivered.Add(1)
		go sn.run(&delivery{msg: msg, shared: in.shared, handed: &a})
	default:
		a.cancel()
		go sn.run(&delivery{msg: msg, shared: in.shared})
	}
}

// delivery is a decoded message that run delivers before its queue's, and
// handed its first attempt if that was handed over already.
type delivery struct {
	msg    *message.Message
	shared bool
	handed *attempt
}

// hold counts size bytes more in sn's queue. Called with mu held.
func (sn *subscription) hold(size int64) { sn.sub.budget.hold(sn, size) }

// take counts in out of sn's queue and returns it. Called with mu held.
func (sn *subscription) take(in *incoming) *incoming {
	sn.sub.budget.release(sn, in.size)
	return in
}

// dropOne drops sn's oldest or newest queued message, by policy, to make
// room in the Subscriber's buffer. It reports false when sn holds nothing.
func (sn *subscription) dropOne(policy OverflowPolicy) bool {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.queue.len() == 0 {
		return false
	}
	if policy == DropOldest {
		sn.noteDrop(sn.take(sn.queue.popFront()))
	} else {
		sn.noteDrop(sn.take(sn.queue.popBack()))
	}
	return true
}

// dropLogInterval bounds how often a subscription logs its drops: a stalled
// consumer on a busy topic would otherwise log every message.
const dropLogInterval = time.Second

// noteDrop counts a dropped message and logs drops at most once per
// dropLogInterval, with the count since the last log. Called with mu held.
func (sn *subscription) noteDrop(in *incoming) {
	s := sn.sub
	s.countDrop(sn.key.name)
	if sn.drops == nil {
		sn.drops = &dropLog{}
	}
	sn.drops.count++
	if now := time.Now(); now.Sub(sn.drops.logged) >= dropLogInterval {
		s.logger.Error("Subscriber buffer full, messages dropped", errBufferFull, watermill.LogFields{
			"topic":          sn.key.name,
			"pattern":        sn.key.pattern,
			"dropped":        sn.drops.count,
			"held_bytes":     s.budget.heldBy(sn),
			"held_messages":  sn.queue.len(),
			"buffer_bytes":   s.config.BufferBytes,
			"queue_size_cap": s.config.QueueSize,
			"policy":         s.config.Overflow.String(),
			"channel":        in.channel,
		})
		sn.drops.count = 0
		sn.drops.logged = now
	}
}

// next takes the oldest queued message. When there is none, or the
// subscription is ending, the goroutine stops running: ok is false, and
// finish reports whether it is to finish the subscription.
func (sn *subscription) next() (in *incoming, ok, finish bool) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.queue.len() > 0 && !sn.ending.Load() {
		return sn.take(sn.queue.popFront()), true, false
	}
	sn.running = false
	if sn.ending.Load() && !sn.finishing {
		sn.finishing = true
		return nil, false, true
	}
	return nil, false, false
}

// run delivers first, if any, then hands the queued messages over one at a
// time until the queue is empty or the subscription ends; the next message
// starts it again.
func (sn *subscription) run(first *delivery) {
	if sn.sub.config.MaxInFlight > 1 && sn.handle == nil {
		sn.runConcurrently()
		return
	}
	if first != nil && !sn.deliver(first.msg, first.shared, first.handed) {
		sn.markEnding() // the consumer's context ended: AfterFunc ends it too
	}
	for {
		in, ok, finish := sn.next()
		if !ok {
			if finish {
				sn.finish()
			}
			return
		}
		msg, err := in.decode(sn.sub)
		if err != nil {
			continue // counted and logged by decode
		}
		if !sn.deliver(msg, in.shared, nil) {
			sn.markEnding() // the consumer's context ended: AfterFunc ends it too
		}
	}
}

// attempt is one delivery of a message: what the consumer gets, with the
// context that ends with its Ack or Nack.
type attempt struct {
	msg    *message.Message
	cancel context.CancelFunc
}

// newAttempt prepares an attempt of msg: a copy when copied (a Nacked
// message cannot be Acked again, and consumers of one topic must not share
// Ack state), with a context that carries the Subscribe context's values
// and ends with the Ack, the Nack or the subscription, as Watermill's
// contract says.
func (sn *subscription) newAttempt(msg *message.Message, copied bool) attempt {
	a := attempt{msg: msg}
	if copied {
		a.msg = msg.Copy()
	}
	var ctx context.Context
	ctx, a.cancel = context.WithCancel(sn.consumerCtx)
	a.msg.SetContext(ctx)
	return a
}

// deliver sends msg to the consumer and waits for its Ack, redelivering a
// fresh copy after each Nack. handed, when set, is its first attempt, handed
// over already. It reports false when the subscription ended first.
func (sn *subscription) deliver(msg *message.Message, shared bool, handed *attempt) bool {
	stats := &sn.sub.stats
	for first := true; ; first = false {
		var a attempt
		var answer answer
		switch {
		case handed != nil:
			a, handed = *handed, nil
			answer = sn.awaitAnswer(a.msg)
		case sn.handle != nil:
			a = sn.newAttempt(msg, shared || !first)
			stats.delivered.Add(1)
			sn.handle(a.msg)
			answer = sn.awaitAnswer(a.msg)
		default:
			a = sn.newAttempt(msg, shared || !first)
			answer = sn.handOver(a.msg)
		}
		a.cancel()
		switch answer {
		case acked:
			stats.acked.Add(1)
			return true
		case nacked:
			stats.nacked.Add(1)
			if !sn.sleep(sn.sub.config.NackResendSleep) {
				stats.discarded.Add(1)
				return false
			}
		default:
			stats.discarded.Add(1)
			return false
		}
	}
}

// answer is what became of a message handed to the consumer.
type answer int

const (
	ended answer = iota // the subscription ended first
	acked
	nacked
)

// handOver sends msg on the output channel and waits for its Ack or Nack,
// unless the subscription ends first.
func (sn *subscription) handOver(msg *message.Message) answer {
	if !sn.send(msg) {
		return ended
	}
	return sn.awaitAnswer(msg)
}

// send sends msg on the output channel, unless the subscription ends
// first.
func (sn *subscription) send(msg *message.Message) bool {
	select {
	case sn.out <- msg:
		sn.sub.stats.delivered.Add(1)
		return true
	case <-sn.stop:
		return false
	case <-sn.consumerDone:
		return false
	}
}

// awaitAnswer waits for msg's Ack or Nack, unless the subscription ends
// first.
func (sn *subscription) awaitAnswer(msg *message.Message) answer {
	select {
	case <-msg.Acked():
		return acked
	case <-msg.Nacked():
		return nacked
	case <-sn.stop:
	case <-sn.consumerDone:
	}
	return answerOf(msg)
}

// answerOf returns msg's answer when it has one, else ended. A consumer
// that answers and then ends its subscription has its answer counted,
// whichever of the two a select saw first.
func answerOf(msg *message.Message) answer {
	select {
	case <-msg.Acked():
		return acked
	case <-msg.Nacked():
		return nacked
	default:
		return ended
	}
}

// sleep waits for d unless the subscription ends first.
func (sn *subscription) sleep(d time.Duration) bool {
	if d <= 0 {
		return !sn.isDone()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-sn.stop:
			return false
		case <-sn.consumerDone:
			return false
		}
	}
}

// finish closes the output channel, counts what was left in the queue,
// removes the subscription from its topic and releases the Subscriber's
// WaitGroup. It runs once, when no delivery goroutine runs.
func (sn *subscription) finish() {
	left := sn.discard()
	sn.sub.leave(sn)
	if sn.out != nil {
		close(sn.out)
	}
	sn.mu.Lock()
	stop, onEnd := sn.stopWatch, sn.onEnd
	sn.finished = true
	sn.mu.Unlock()
	if stop != nil {
		stop()
	}
	if onEnd != nil {
		onEnd()
	}
	if left > 0 {
		sn.sub.logger.Info("Subscription ended with messages still queued", watermill.LogFields{
			"topic": sn.key.name, "pattern": sn.key.pattern, "discarded": left,
		})
	}
	sn.sub.wg.Done()
}

// discard ends the queue, releasing what it held, and returns how many
// messages it held.
func (sn *subscription) discard() int {
	sn.mu.Lock()
	sn.ended = true
	left := sn.queue.len()
	for sn.queue.len() > 0 {
		sn.take(sn.queue.popFront())
	}
	sn.queue = deque{}
	sn.sub.budget.forget(sn)
	sn.mu.Unlock()
	sn.sub.stats.discarded.Add(uint64(left))
	return left
}

// deque is a FIFO of received messages that grows as needed and gives its
// memory back when emptied, so that an idle subscription holds nothing.
type deque struct {
	buf        []*incoming
	head, size int32 // int32: an idle subscription's struct stays in a smaller size class
}

func (d *deque) len() int { return int(d.size) }

func (d *deque) pushBack(m *incoming) {
	n := int32(len(d.buf))
	if d.size == n {
		grown := make([]*incoming, max(4, 2*n))
		for i := range d.size {
			grown[i] = d.buf[(d.head+i)%n]
		}
		d.buf, d.head, n = grown, 0, int32(len(grown))
	}
	d.buf[(d.head+d.size)%n] = m
	d.size++
}

func (d *deque) popFront() *incoming {
	m := d.buf[d.head]
	d.buf[d.head] = nil
	d.head = (d.head + 1) % int32(len(d.buf))
	d.size--
	d.shrink()
	return m
}

func (d *deque) popBack() *incoming {
	i := (d.head + d.size - 1) % int32(len(d.buf))
	m := d.buf[i]
	d.buf[i] = nil
	d.size--
	d.shrink()
	return m
}

// shrink gives a large buffer back once it is empty.
func (d *deque) shrink() {
	if d.size == 0 && len(d.buf) > 64 {
		*d = deque{}
	}
}
