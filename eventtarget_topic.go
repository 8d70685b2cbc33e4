package redispubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// topicState is where a topic of an EventTarget stands. Guarded by
// EventTarget.mu.
type topicState uint8

const (
	// topicSubscribing: its first listener's AddEventListener is in Subscribe.
	topicSubscribing topicState = iota
	// topicLive: its goroutine delivers the topic's messages.
	topicLive
	// topicEnded: forgotten by the EventTarget, its context cancelled or
	// about to be.
	topicEnded
)

// topicKey is a topic's key in EventTarget.topics: its name, and private,
// not 0, for the subscription of a FromPosition listener.
type topicKey struct {
	name    string
	private uint64
}

// targetTopic is one topic of an EventTarget: its subscription and its
// listeners. An idle one holds this, its listeners and its context; on a
// *Subscriber no goroutine (its delivery goroutine calls deliver), on any
// other Subscriber one (run).
type targetTopic[T any] struct {
	target *EventTarget[T]
	name   string
	// key is its key in target.topics: name, and for the subscription of
	// a FromPosition listener (which starts after from) a number of its
	// own, so that no other listener joins it.
	key  topicKey
	from *Position
	// ctx is the context of the topic's Subscribe: cancelling it ends the
	// subscription.
	ctx    context.Context
	cancel context.CancelFunc

	// Guarded by target.mu.
	state topicState
	// first is the listener whose AddEventListener subscribes, while it
	// does; removing it (its context ended) abandons the subscription.
	first *targetListener[T]
	// wait is made for the listeners that wait for first.
	wait *topicWait
	// listeners is replaced, never modified in place, so that a delivery
	// can use a snapshot without holding the lock.
	listeners []*targetListener[T]
}

// topicWait is what the listeners that join a topic while its first
// listener subscribes wait for.
type topicWait struct {
	ready chan struct{} // closed when the first listener is done
	err   error         // written before ready is closed; nil when the topic went live
}

func newTargetTopic[T any](t *EventTarget[T], name string) *targetTopic[T] {
	ctx, cancel := context.WithCancel(context.Background())
	return &targetTopic[T]{target: t, name: name, key: topicKey{name: name}, ctx: ctx, cancel: cancel}
}

// removeAll marks every listener of tt removed and drops them; it returns
// stops with the stop functions of their WithContext watches appended, to
// be called once mu is released. Called with target.mu held.
func (tt *targetTopic[T]) removeAll(stops []func() bool) []func() bool {
	for _, tl := range tt.listeners {
		tl.removed.Store(true)
		if tl.stop != nil {
			stops = append(stops, tl.stop)
			tl.stop = nil
		}
	}
	tt.listeners = nil
	return stops
}

// Listener is the handle of a listener added with AddEventListener. Go
// functions are not comparable, so it is the way to remove the listener.
type Listener struct {
	removed atomic.Bool
	once    bool // removed just before its first call
	owner   interface{ detach() }
}

// Remove removes the listener. It does not wait: a call of the listener that
// is running goes on, and no call starts after Remove returned. When it was
// the last listener of its topic, the topic's subscription is ended. Remove
// is idempotent, safe to call from inside any listener and after Close, and
// a no-op on a nil Listener.
func (l *Listener) Remove() {
	if l == nil || l.owner == nil || !l.removed.CompareAndSwap(false, true) {
		return
	}
	l.owner.detach()
}

// targetListener is one listener of a topic; its Listener is the handle
// AddEventListener returns.
type targetListener[T any] struct {
	Listener
	topic *targetTopic[T]
	fn    func(context.Context, Event[T])
	// stop ends the watch of the listener's WithContext context; nil
	// without one. Guarded by the target's mu.
	stop func() bool
}

// watch removes tl when ctx is done.
func (tl *targetListener[T]) watch(ctx context.Context) {
	stop := context.AfterFunc(ctx, tl.Remove)
	t := tl.topic.target
	t.mu.Lock()
	if !tl.removed.Load() {
		tl.stop, stop = stop, nil
	}
	t.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// detach removes tl from its topic, after tl.removed was set, and ends the
// topic when tl was its last listener or its first one still subscribing.
func (tl *targetListener[T]) detach() {
	tt := tl.topic
	t := tt.target
	t.mu.Lock()
	stop := tl.stop
	tl.stop = nil
	if i := slices.Index(tt.listeners, tl); i >= 0 {
		if len(tt.listeners) == 1 {
			tt.listeners = nil
		} else {
			tt.listeners = slices.Delete(slices.Clone(tt.listeners), i, i+1)
		}
	}
	end := tt.state != topicEnded && (len(tt.listeners) == 0 || tt.first == tl)
	if end {
		t.forget(tt)
	}
	t.mu.Unlock()
	if stop != nil {
		stop()
	}
	if end {
		tt.cancel()
	}
}

// subscribe makes the Subscribe of tl's topic, tl being its first listener,
// and on success starts the topic's goroutine. It runs on the caller of
// AddEventListener, whose ctx bounds the wait: when ctx ends first, tl is
// removed, which abandons the subscription (the listeners waiting for it
// start over). It returns errRetry when the topic ended meanwhile.
func (t *EventTarget[T]) subscribe(ctx context.Context, tl *targetListener[T]) error {
	defer t.wg.Done() // Added by join
	tt := tl.topic
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, tl.Remove)
	}
	// A *Subscriber calls deliver on its own delivery goroutine, which
	// runs only while messages are queued: an idle topic then costs no
	// goroutine. Any other Subscriber hands messages over a channel that
	// run reads.
	var msgs <-chan *message.Message
	var err error
	direct, isDirect := t.sub.(handlerSubscriber)
	isDirect = isDirect && tt.from == nil
	switch {
	case tt.from != nil:
		msgs, err = t.sub.(PositionSubscriber).SubscribeFrom(tt.ctx, tt.name, *tt.from) // checked by AddEventListener
	case isDirect:
		t.wg.Add(1) // Done by the end callback, or below on an error
		err = direct.subscribeHandler(tt.ctx, tt.name,
			func(msg *message.Message) { t.deliver(tt, msg) },
			func() {
				defer t.wg.Done()
				t.subscriptionClosed(tt)
			})
		if err != nil {
			t.wg.Done()
		}
	default:
		msgs, err = t.sub.Subscribe(tt.ctx, tt.name)
	}
	if stop != nil && !stop() {
		tl.Remove() // ctx ended; the AfterFunc may not have run yet
	}

	t.mu.Lock()
	var waitErr error
	switch {
	case tt.state != topicSubscribing:
		waitErr = errRetry // ended by Close, or tl was removed
	case err != nil:
		err = topicError("subscribe to", tt.name, err)
		waitErr = err
		t.forget(tt)
	default:
		tt.state = topicLive
		if !isDirect {
			t.wg.Add(1) // Done by run
		}
	}
	tt.first = nil
	if w := tt.wait; w != nil {
		w.err = waitErr
		close(w.ready)
		tt.wait = nil
	}
	t.mu.Unlock()

	if waitErr != nil {
		if err == nil {
			t.logger.Debug("Subscription abandoned", watermill.LogFields{"topic": tt.name})
		} else {
			t.logger.Error("Cannot subscribe", err, watermill.LogFields{"topic": tt.name})
		}
		tt.cancel()
		return waitErr
	}
	if !isDirect {
		go t.run(tt, msgs)
	}
	return nil
}

// handlerSubscriber is implemented by *Subscriber: subscribeHandler calls a
// function with each message in place of a channel.
type handlerSubscriber interface {
	subscribeHandler(ctx context.Context, topic string, handle func(*message.Message), ended func()) error
}

// run delivers tt's messages until the Subscriber closes msgs, which it
// does once tt's context is cancelled (Watermill's contract), or on its own.
// It waits on msgs alone: every channel a parked goroutine waits on costs
// memory, for as long as the topic is idle.
func (t *EventTarget[T]) run(tt *targetTopic[T], msgs <-chan *message.Message) {
	defer t.wg.Done()
	for msg := range msgs {
		t.deliver(tt, msg)
	}
	t.subscriptionClosed(tt)
}

// subscriptionClosed ends tt after the Subscriber closed its channel, and
// reports it when the EventTarget did not end the topic itself.
func (t *EventTarget[T]) subscriptionClosed(tt *targetTopic[T]) {
	t.mu.Lock()
	ended := tt.state == topicEnded
	var stops []func() bool
	if !ended {
		t.forget(tt)
		stops = tt.removeAll(nil)
	}
	t.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	tt.cancel()
	if !ended {
		// Only now: once reported, a new listener subscribes again.
		t.report(tt.name, ErrSubscriptionClosed, nil)
	}
}

// deliver calls tt's listeners with msg, through the delivery wrapper if
// there is one, then Acks it.
func (t *EventTarget[T]) deliver(tt *targetTopic[T], msg *message.Message) {
	defer msg.Ack()
	if t.wrap == nil {
		_ = t.callListeners(tt, msg, msg.Context())
		return
	}
	t.wrap(tt.name, msg, func(ctx context.Context) error { return t.callListeners(tt, msg, ctx) })
}

// callListeners decodes msg's payload and calls tt's listeners with it and
// ctx. It returns what it reported: the decode error, or the listeners'
// panics joined.
func (t *EventTarget[T]) callListeners(tt *targetTopic[T], msg *message.Message, ctx context.Context) error {
	typ, id := SplitTopic(tt.name)
	ev := Event[T]{Type: typ, ID: id, Message: msg}
	if len(msg.Payload) > 0 {
		if err := json.Unmarshal(msg.Payload, &ev.Payload); err != nil {
			err = fmt.Errorf("%w into %T (message %s): %w", ErrPayloadDecode, ev.Payload, msg.UUID, err)
			t.report(tt.name, err, nil)
			return err
		}
	}

	t.mu.Lock()
	listeners := tt.listeners
	t.mu.Unlock()

	var panics []error
	for _, tl := range listeners {
		if tl.once {
			if !tl.removed.CompareAndSwap(false, true) {
				continue
			}
			tl.detach()
		} else if tl.removed.Load() {
			continue
		}
		if err := t.call(tt.name, tl, ctx, ev); err != nil {
			panics = append(panics, err)
		}
	}
	return errors.Join(panics...)
}

// call calls one listener, recovering a panic, which it reports and
// returns.
func (t *EventTarget[T]) call(topic string, tl *targetListener[T], ctx context.Context, ev Event[T]) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if rerr, ok := r.(error); ok {
			err = fmt.Errorf("%w on topic %q: %w", ErrListenerPanic, topic, rerr)
		} else {
			err = fmt.Errorf("%w on topic %q: %v", ErrListenerPanic, topic, r)
		}
		t.report(topic, err, watermill.LogFields{"message_uuid": ev.Message.UUID, "stack": string(debug.Stack())})
	}()
	tl.fn(ctx, ev)
	return nil
}

// report logs err and passes it to the error hook.
func (t *EventTarget[T]) report(topic string, err error, fields watermill.LogFields) {
	logger := t.logger.With(watermill.LogFields{"topic": topic})
	logger.Error("Event delivery failed", err, fields)
	if t.onError == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			logger.Error("Error handler panicked", fmt.Errorf("%v", r), watermill.LogFields{"stack": string(debug.Stack())})
		}
	}()
	t.onError(topic, err)
}
