package redispubsub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Errors of the EventTarget that callers may test with errors.Is.
var (
	// ErrEventTargetClosed is returned by AddEventListener and DispatchEvent
	// after Close.
	ErrEventTargetClosed = errors.New("redispubsub: event target closed")
	// ErrPayloadDecode is wrapped by the error reported to the error hook when
	// a message's payload does not decode into the event type.
	ErrPayloadDecode = errors.New("redispubsub: event payload does not decode")
	// ErrListenerPanic is wrapped by the error reported to the error hook when
	// a listener panicked. When the panic value is an error, it is wrapped too.
	ErrListenerPanic = errors.New("redispubsub: event listener panicked")
	// ErrSubscriptionClosed is reported to the error hook when the Subscriber
	// closed a topic's channel although the EventTarget still had listeners
	// on it (for example because the Subscriber was closed). Those listeners
	// are removed; a later AddEventListener subscribes again.
	ErrSubscriptionClosed = errors.New("redispubsub: subscription closed by the subscriber")
)

// Event is one typed event of an EventTarget.
type Event[T any] struct {
	// Type is the event type, the part of the topic before the first ":".
	// It is never empty and never contains ":".
	Type string
	// ID is the part of the topic after the first ":"; empty when the topic
	// has none.
	ID string
	// Payload is the event's data, encoded as JSON (encoding/json) in the
	// message payload. All listeners of an event share one decoded value:
	// they must not modify what it refers to.
	Payload T
	// Message is, for a received event, the Watermill message it arrived in.
	// Listeners must not Ack or Nack it: the EventTarget Acks it after every
	// listener ran. For DispatchEvent Message is optional: when it is not
	// nil, its Metadata is copied to the published message (its UUID,
	// payload and context are not used).
	Message *message.Message
}

// EventTarget is a typed AddEventListener / DispatchEvent API over any
// Watermill Publisher and Subscriber: this package's Redis Pub/Sub, the
// in-process gochannel, or watermill-redisstream for durable delivery. It
// uses nothing but the message.Publisher and message.Subscriber interfaces.
//
// What a caller may rely on:
//
//   - A topic is "type" or "type:id" (see Topic). The first listener of a
//     topic makes one Subscribe of that topic; further listeners share it;
//     removing the last listener cancels that subscription's context.
//   - AddEventListener returns once Subscribe has returned, so with a
//     Subscriber whose Subscribe returns after the subscription is live (this
//     package's and gochannel's do) an event dispatched after
//     AddEventListener returned is received.
//   - Each topic has its own goroutine that calls the topic's listeners
//     synchronously, in the order they were added, for one event after
//     another in the order the Subscriber delivers them. A slow listener
//     delays only its own topic.
//   - A message is Acked after every listener ran, including when one of
//     them panicked (the panic is recovered and reported to the error hook)
//     and when its payload does not decode (reported, no listener called). A
//     message is never Nacked: a failing listener does not cause redelivery.
//   - Listeners may add and remove listeners, also themselves, and dispatch
//     events. A listener removed while an event is being delivered is not
//     called for that event if it has not been called yet; a listener added
//     meanwhile gets the events received after it was added.
//
// The methods of an EventTarget are safe for concurrent use.
type EventTarget[T any] struct {
	pub     message.Publisher
	sub     message.Subscriber
	logger  watermill.LoggerAdapter
	onError func(topic string, err error)

	mu     sync.Mutex
	closed bool
	topics map[string]*targetTopic[T]

	topicsWg sync.WaitGroup
}

// targetTopic is one topic's subscription and its listeners.
type targetTopic[T any] struct {
	name   string
	typ    string
	id     string
	cancel context.CancelFunc
	logger watermill.LoggerAdapter

	ready chan struct{} // closed when Subscribe returned
	err   error         // Subscribe's error, set before ready is closed

	// listeners is replaced, never modified in place, so that a delivery can
	// use a snapshot without holding the lock. Guarded by EventTarget.mu.
	listeners []*targetListener[T]
}

type targetListener[T any] struct {
	fn     func(context.Context, Event[T])
	once   bool
	handle *Listener
}

// Listener is the handle of a listener added with AddEventListener. Go
// functions are not comparable, so it is the way to remove the listener.
type Listener struct {
	removed atomic.Bool
	done    chan struct{} // closed when removed
	detach  func()

	mu   sync.Mutex
	stop func() bool // stops the WithContext watch; nil without one
}

// Remove removes the listener. It does not wait: a call of the listener that
// is running goes on, and no call starts after Remove returned. When it was
// the last listener of its topic, the topic's subscription is ended. Remove
// is idempotent, safe to call from inside any listener and after Close, and
// a no-op on a nil Listener.
func (l *Listener) Remove() {
	if l == nil || !l.markRemoved() {
		return
	}
	l.detach()
}

// markRemoved marks l removed; it reports whether this call did it.
func (l *Listener) markRemoved() bool {
	if !l.removed.CompareAndSwap(false, true) {
		return false
	}
	close(l.done)
	l.mu.Lock()
	stop := l.stop
	l.mu.Unlock()
	if stop != nil {
		stop()
	}
	return true
}

// NewEventTarget returns an EventTarget that dispatches events with pub and
// receives them with sub. The EventTarget does not own them: Close does not
// close them, and they must stay open as long as the EventTarget is used.
func NewEventTarget[T any](pub message.Publisher, sub message.Subscriber, opts ...EventTargetOption) (*EventTarget[T], error) {
	if pub == nil {
		return nil, errors.New("redispubsub: NewEventTarget: nil publisher")
	}
	if sub == nil {
		return nil, errors.New("redispubsub: NewEventTarget: nil subscriber")
	}
	var o eventTargetOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = watermill.NopLogger{}
	}
	return &EventTarget[T]{
		pub:     pub,
		sub:     sub,
		logger:  o.logger.With(watermill.LogFields{"event_target_uuid": watermill.NewShortUUID()}),
		onError: o.onError,
		topics:  make(map[string]*targetTopic[T]),
	}, nil
}

// AddEventListener adds listener to topic ("type" or "type:id", see Topic)
// and returns its handle. listener is called with the message's context
// (msg.Context()) for every event received on topic until the listener is
// removed: by the handle's Remove, by RemoveEventListener, by Close, after
// its first event with Once, or when the context given WithContext is done.
//
// The first listener of a topic subscribes to it, and AddEventListener
// returns only after the Subscriber's Subscribe returned; a later listener of
// the same topic also waits for that. Because that wait is I/O (on Redis, a
// round trip to the server), AddEventListener takes ctx as its first
// argument, as Go's blocking calls do: ctx bounds the wait, and only the
// wait (like the context of net.Dialer.DialContext, which bounds the dial
// and not the connection). When ctx is done first, the listener is not added
// and ctx's error is returned. To bound the listener's lifetime, use
// WithContext.
//
// It returns an error wrapping ErrInvalidEventType for a topic whose type is
// empty, the Subscriber's error when Subscribe fails (the listener is then
// not added), and ErrEventTargetClosed after Close.
func (t *EventTarget[T]) AddEventListener(ctx context.Context, topic string, listener func(context.Context, Event[T]), opts ...ListenerOption) (*Listener, error) {
	if listener == nil {
		return nil, errors.New("redispubsub: AddEventListener: nil listener")
	}
	typ, id := SplitTopic(topic)
	if _, err := Topic(typ, id); err != nil {
		return nil, fmt.Errorf("redispubsub: AddEventListener %q: %w", topic, err)
	}
	var o listenerOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.ctx != nil {
		if err := o.ctx.Err(); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	h := &Listener{done: make(chan struct{})}
	tl := &targetListener[T]{fn: listener, once: o.once, handle: h}

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrEventTargetClosed
	}
	tt := t.topics[topic]
	if tt == nil {
		subCtx, cancel := context.WithCancel(context.Background())
		tt = &targetTopic[T]{
			name:   topic,
			typ:    typ,
			id:     id,
			cancel: cancel,
			logger: t.logger.With(watermill.LogFields{"topic": topic}),
			ready:  make(chan struct{}),
		}
		t.topics[topic] = tt
		t.topicsWg.Add(1)
		go t.runTopic(subCtx, tt)
	}
	tt.listeners = append(slices.Clip(tt.listeners), tl)
	h.detach = func() { t.detach(tt, tl) }
	t.mu.Unlock()

	if o.ctx != nil {
		stop := context.AfterFunc(o.ctx, h.Remove)
		h.mu.Lock()
		h.stop = stop
		h.mu.Unlock()
		if h.removed.Load() {
			stop()
		}
	}

	select {
	case <-tt.ready:
	case <-h.done:
	case <-ctx.Done():
		h.Remove()
		return nil, ctx.Err()
	}
	if h.removed.Load() {
		// Removed by Close, by o.ctx, by a failed Subscribe, or (once
		// live) by Once after its event.
		if t.isClosed() {
			return nil, ErrEventTargetClosed
		}
		if o.ctx != nil && o.ctx.Err() != nil {
			return nil, o.ctx.Err()
		}
	}
	select {
	case <-tt.ready:
		if tt.err != nil {
			return nil, tt.err
		}
		return h, nil
	default:
		return nil, fmt.Errorf("redispubsub: AddEventListener %q: listener removed before its subscription was live", topic)
	}
}

// RemoveEventListener removes the listener whose handle l is; it is l.Remove().
func (t *EventTarget[T]) RemoveEventListener(l *Listener) {
	l.Remove()
}

// DispatchEvent publishes ev on the topic Topic(ev.Type, ev.ID), with
// ev.Payload encoded as JSON (encoding/json) as the message payload, a new
// message UUID, ev.Message's metadata if ev.Message is not nil, and ctx as
// the message's context. It returns the Publisher's error, an error wrapping
// ErrInvalidEventType for an invalid ev.Type, the JSON encoding error, ctx's
// error if ctx is already done, or ErrEventTargetClosed after Close.
//
// Listeners of this EventTarget are not called directly: the event reaches
// them, like every other subscriber of the topic, through the Subscriber.
func (t *EventTarget[T]) DispatchEvent(ctx context.Context, ev Event[T]) error {
	if t.isClosed() {
		return ErrEventTargetClosed
	}
	topic, err := Topic(ev.Type, ev.ID)
	if err != nil {
		return fmt.Errorf("redispubsub: DispatchEvent: %w", err)
	}
	payload, err := marshalPayload(ev.Payload)
	if err != nil {
		return fmt.Errorf("redispubsub: DispatchEvent %q: encode payload: %w", topic, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	if ev.Message != nil {
		for k, v := range ev.Message.Metadata {
			msg.Metadata.Set(k, v)
		}
	}
	msg.SetContext(ctx)
	if err := t.pub.Publish(topic, msg); err != nil {
		return fmt.Errorf("redispubsub: DispatchEvent %q: %w", topic, err)
	}
	return nil
}

// Close removes every listener, ends every subscription of the EventTarget
// and waits until no listener runs and every goroutine of the EventTarget
// has returned. It does not close the Publisher and the Subscriber, which
// the caller owns. Close is idempotent and always returns nil; every call
// waits as the first does.
//
// Close must not be called from inside a listener, as it would wait for that
// listener to return; a listener may call it in a new goroutine.
func (t *EventTarget[T]) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.topicsWg.Wait()
		return nil
	}
	t.closed = true
	topics := t.topics
	t.topics = nil
	t.mu.Unlock()

	for _, tt := range topics {
		t.mu.Lock()
		listeners := tt.listeners
		tt.listeners = nil
		t.mu.Unlock()
		for _, tl := range listeners {
			tl.handle.markRemoved()
		}
		tt.cancel()
	}
	t.topicsWg.Wait()
	t.logger.Debug("Event target closed", nil)
	return nil
}

func (t *EventTarget[T]) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// detach removes tl from tt, and ends tt's subscription when tl was its last
// listener.
func (t *EventTarget[T]) detach(tt *targetTopic[T], tl *targetListener[T]) {
	t.mu.Lock()
	if i := slices.Index(tt.listeners, tl); i >= 0 {
		tt.listeners = slices.Delete(slices.Clone(tt.listeners), i, i+1)
	}
	last := len(tt.listeners) == 0 && t.topics[tt.name] == tt
	if last {
		delete(t.topics, tt.name)
	}
	t.mu.Unlock()
	if last {
		tt.logger.Debug("Last listener removed, ending subscription", nil)
		tt.cancel()
	}
}

// drop forgets tt and its listeners after its subscription failed with
// subscribeErr, or ended by itself (subscribeErr nil).
func (t *EventTarget[T]) drop(tt *targetTopic[T], subscribeErr error) {
	t.mu.Lock()
	if t.topics[tt.name] == tt {
		delete(t.topics, tt.name)
	}
	listeners := tt.listeners
	tt.listeners = nil
	t.mu.Unlock()
	// Only now, so that an AddEventListener after a failed one subscribes
	// again instead of joining tt; and before the listeners are marked
	// removed, so that their AddEventListener returns subscribeErr.
	if subscribeErr != nil {
		tt.err = subscribeErr
		close(tt.ready)
	}
	for _, tl := range listeners {
		tl.handle.markRemoved()
	}
	tt.cancel()
}

// runTopic subscribes to tt and delivers its messages until ctx is done.
func (t *EventTarget[T]) runTopic(ctx context.Context, tt *targetTopic[T]) {
	defer t.topicsWg.Done()

	msgs, err := t.sub.Subscribe(ctx, tt.name)
	if err != nil {
		if ctx.Err() == nil {
			tt.logger.Error("Cannot subscribe", err, nil)
		}
		t.drop(tt, fmt.Errorf("redispubsub: subscribe to %q: %w", tt.name, err))
		return
	}
	close(tt.ready)
	tt.logger.Debug("Subscribed", nil)

	for {
		select {
		case <-ctx.Done():
			// The Subscriber closes msgs when ctx is done, also when nobody
			// reads it (Watermill's contract), so it needs no draining.
			tt.logger.Debug("Subscription ended", nil)
			return
		case msg, ok := <-msgs:
			if !ok {
				if ctx.Err() == nil {
					t.drop(tt, nil) // before report: once reported, a new listener subscribes again
					t.report(tt, ErrSubscriptionClosed, nil)
				}
				return
			}
			t.deliver(tt, msg)
		}
	}
}

// deliver calls tt's listeners with msg, then Acks it.
func (t *EventTarget[T]) deliver(tt *targetTopic[T], msg *message.Message) {
	defer msg.Ack()

	ev := Event[T]{Type: tt.typ, ID: tt.id, Message: msg}
	if len(msg.Payload) > 0 {
		if err := json.Unmarshal(msg.Payload, &ev.Payload); err != nil {
			t.report(tt, fmt.Errorf("%w into %T (message %s): %w", ErrPayloadDecode, ev.Payload, msg.UUID, err), nil)
			return
		}
	}

	t.mu.Lock()
	listeners := tt.listeners
	t.mu.Unlock()

	ctx := msg.Context()
	for _, tl := range listeners {
		if tl.once {
			if !tl.handle.markRemoved() {
				continue
			}
			tl.handle.detach()
		} else if tl.handle.removed.Load() {
			continue
		}
		t.call(tt, tl, ctx, ev)
	}
}

// call calls one listener, recovering a panic.
func (t *EventTarget[T]) call(tt *targetTopic[T], tl *targetListener[T], ctx context.Context, ev Event[T]) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		var err error
		if rerr, ok := r.(error); ok {
			err = fmt.Errorf("%w on topic %q: %w", ErrListenerPanic, tt.name, rerr)
		} else {
			err = fmt.Errorf("%w on topic %q: %v", ErrListenerPanic, tt.name, r)
		}
		t.report(tt, err, watermill.LogFields{"message_uuid": ev.Message.UUID, "stack": string(debug.Stack())})
	}()
	tl.fn(ctx, ev)
}

// report logs err and passes it to the error hook.
func (t *EventTarget[T]) report(tt *targetTopic[T], err error, fields watermill.LogFields) {
	tt.logger.Error("Event delivery failed", err, fields)
	if t.onError == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			tt.logger.Error("Error handler panicked", fmt.Errorf("%v", r), watermill.LogFields{"stack": string(debug.Stack())})
		}
	}()
	t.onError(tt.name, err)
}

// marshalPayload encodes a payload as JavaScript's JSON.stringify would as
// far as encoding/json allows: '<', '>' and '&' are not escaped (U+2028 and
// U+2029 still are; both decode to the same string).
func marshalPayload(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
