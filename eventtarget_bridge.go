package redispubsub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

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
//     removing the last listener cancels that subscription's context, and the
//     EventTarget then keeps nothing of the topic.
//   - AddEventListener returns once Subscribe has returned, so with a
//     Subscriber whose Subscribe returns after the subscription is live (this
//     package's and gochannel's do) an event dispatched after
//     AddEventListener returned is received.
//   - A topic's listeners are called synchronously, in the order they were
//     added, for one event after another in the order the Subscriber
//     delivers them, on one goroutine per topic: on this package's
//     *Subscriber, the subscription's delivery goroutine, which runs only
//     while events wait (an idle topic costs no goroutine); on any other
//     Subscriber, a goroutine of the EventTarget that reads the topic's
//     channel. A slow listener delays only its own topic.
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
	wrap    DeliveryWrapper

	mu     sync.Mutex
	closed bool
	topics map[topicKey]*targetTopic[T] // by targetTopic.key
	// private numbers the topics of FromPosition listeners.
	private uint64
	// peak is the most topics the map held since it was made: a Go map
	// keeps the room of its peak, so forget makes a smaller one when most
	// topics are gone.
	peak int

	// wg counts the first AddEventListener calls of topics while they
	// subscribe, and the topics' goroutines.
	wg sync.WaitGroup
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
		wrap:    o.wrap,
		topics:  make(map[topicKey]*targetTopic[T]),
	}, nil
}

// Subscriber returns the Subscriber the EventTarget receives events with, as
// given to NewEventTarget.
func (t *EventTarget[T]) Subscriber() message.Subscriber { return t.sub }

// AddEventListener adds listener to topic ("type" or "type:id", see Topic)
// and returns its handle. listener is called with the message's context
// (msg.Context()) for every event received on topic until the listener is
// removed: by the handle's Remove, by RemoveEventListener, by Close, after
// its first event with Once, or when the context given WithContext is done.
//
// The first listener of a topic subscribes to it, and AddEventListener
// returns only after the Subscriber's Subscribe returned; a later listener of
// the same topic also waits for that (and subscribes anew if the first one
// gives up, its context ended). Because that wait is I/O (on Redis, a
// round trip to the server), AddEventListener takes ctx as its first
// argument, as Go's blocking calls do: ctx bounds the wait, and only the
// wait (like the context of net.Dialer.DialContext, which bounds the dial
// and not the connection). When ctx is done first, the listener is not added
// and ctx's error is returned. To bound the listener's lifetime, use
// WithContext.
//
// It returns an error wrapping ErrInvalidEventType for a topic whose type is
// empty, the Subscriber's error when Subscribe fails (the listener is then
// not added; the error names the topic once), and ErrEventTargetClosed after
// Close.
func (t *EventTarget[T]) AddEventListener(ctx context.Context, topic string, listener func(context.Context, Event[T]), opts ...ListenerOption) (*Listener, error) {
	if listener == nil {
		return nil, errors.New("redispubsub: AddEventListener: nil listener")
	}
	if _, err := Topic(SplitTopic(topic)); err != nil {
		return nil, topicError("AddEventListener", topic, err)
	}
	var o listenerOptions
	for _, opt := range opts {
		opt(&o)
	}
	if _, ok := t.sub.(PositionSubscriber); o.from != nil && !ok {
		return nil, fmt.Errorf("%w: AddEventListener %q: %T", ErrPositionsUnsupported, topic, t.sub)
	}
	for {
		if o.ctx != nil {
			if err := o.ctx.Err(); err != nil {
				return nil, err
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		tl, first, wait, err := t.join(topic, listener, o)
		if err != nil {
			return nil, err
		}
		if o.ctx != nil {
			tl.watch(o.ctx)
		}
		switch {
		case first:
			err = t.subscribe(ctx, tl)
		case wait != nil:
			err = t.await(ctx, o.ctx, wait)
		}
		if err != nil || tl.removed.Load() {
			// Subscribe failed, or the listener was removed (by Close, by
			// o.ctx, or because ctx ended) before it was live.
			tl.Remove()
			if err = t.addError(ctx, o.ctx, err); err == errRetry {
				continue
			}
			return nil, err
		}
		return &tl.Listener, nil
	}
}

// errRetry tells the listeners that waited for a first listener that its
// Subscribe was abandoned (its AddEventListener's context ended): they start
// over, and one of them subscribes.
var errRetry = errors.New("redispubsub: subscription abandoned by its first listener")

// join adds a listener to topic. first reports that it is the topic's first
// listener, which is to subscribe; otherwise wait, when not nil, is what the
// listener waits for until the first listener's Subscribe returned.
func (t *EventTarget[T]) join(topic string, fn func(context.Context, Event[T]), o listenerOptions) (tl *targetListener[T], first bool, wait *topicWait, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false, nil, ErrEventTargetClosed
	}
	key := topicKey{name: topic}
	if o.from != nil {
		// A subscription of its own, under a key no other listener has.
		t.private++
		key.private = t.private
	}
	tt := t.topics[key]
	if tt == nil {
		tt = newTargetTopic(t, topic)
		tt.key, tt.from = key, o.from
		t.topics[key] = tt
		t.peak = max(t.peak, len(t.topics))
		t.wg.Add(1) // Done by subscribe
		first = true
	}
	tl = &targetListener[T]{topic: tt, fn: fn}
	tl.once, tl.owner = o.once, tl
	tt.listeners = append(slices.Clip(tt.listeners), tl)
	switch {
	case first:
		tt.first = tl
	case tt.state == topicSubscribing:
		if tt.wait == nil {
			tt.wait = &topicWait{ready: make(chan struct{})}
		}
		wait = tt.wait
	}
	return tl, first, wait, nil
}

// await waits until the first listener of a topic is done subscribing (w),
// ctx is done or lifetime (the listener's WithContext, or nil) is done.
func (t *EventTarget[T]) await(ctx, lifetime context.Context, w *topicWait) error {
	var lifetimeDone <-chan struct{}
	if lifetime != nil {
		lifetimeDone = lifetime.Done()
	}
	select {
	case <-w.ready:
		return w.err
	case <-ctx.Done():
	case <-lifetimeDone:
	}
	return t.addError(ctx, lifetime, nil)
}

// addError is the error of an AddEventListener whose listener was removed,
// or whose topic failed with err, before it returned: ErrEventTargetClosed
// after Close, else the error of ctx or lifetime when it is done, else err.
func (t *EventTarget[T]) addError(ctx, lifetime context.Context, err error) error {
	switch {
	case t.isClosed():
		return ErrEventTargetClosed
	case ctx.Err() != nil:
		return ctx.Err()
	case lifetime != nil && lifetime.Err() != nil:
		return lifetime.Err()
	case err != nil:
		return err
	default:
		return errors.New("redispubsub: AddEventListener: listener removed before its subscription was live")
	}
}

// RemoveEventListener removes the listener whose handle l is; it is l.Remove().
func (t *EventTarget[T]) RemoveEventListener(l *Listener) {
	l.Remove()
}

// DispatchEvent publishes ev on the topic Topic(ev.Type, ev.ID), with
// ev.Payload encoded as JSON (encoding/json) as the message payload, a new
// message UUID, ev.Message's metadata if ev.Message is not nil, and ctx as
// the message's context. It returns the Publisher's error (naming the topic
// once), an error wrapping ErrInvalidEventType for an invalid ev.Type, the
// JSON encoding error, ctx's error if ctx is already done, or
// ErrEventTargetClosed after Close.
//
// Listeners of this EventTarget are not called directly: the event reaches
// them, like every other subscriber of the topic, through the Subscriber.
func (t *EventTarget[T]) DispatchEvent(ctx context.Context, ev Event[T]) error {
	if t.isClosed() {
		return ErrEventTargetClosed
	}
	topic, err := Topic(ev.Type, ev.ID)
	if err != nil {
		return topicError("DispatchEvent", ev.Type, err)
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
		return topicError("DispatchEvent", topic, err)
	}
	return nil
}

// Close removes every listener, ends every subscription of the EventTarget
// and waits until no listener runs and every goroutine of the EventTarget
// has returned, which is once the Subscriber closed the channels of the
// subscriptions it ended (Watermill's contract: it closes them when the
// Subscribe context is cancelled) and the AddEventListener calls still in
// Subscribe returned. It does not close the Publisher and the Subscriber,
// which the caller owns. Close is idempotent and always returns nil; every
// call waits as the first does.
//
// Close must not be called from inside a listener, as it would wait for that
// listener to return; a listener may call it in a new goroutine.
func (t *EventTarget[T]) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return nil
	}
	t.closed = true
	topics := t.topics
	t.topics = nil
	var stops []func() bool
	for _, tt := range topics {
		tt.state = topicEnded
		stops = tt.removeAll(stops)
	}
	t.mu.Unlock()

	for _, stop := range stops {
		stop()
	}
	for _, tt := range topics {
		tt.cancel()
	}
	t.wg.Wait()
	t.logger.Debug("Event target closed", nil)
	return nil
}

func (t *EventTarget[T]) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// forget removes tt from the topics and marks it ended. Called with mu held.
func (t *EventTarget[T]) forget(tt *targetTopic[T]) {
	tt.state = topicEnded
	if t.topics[tt.key] != tt {
		return
	}
	delete(t.topics, tt.key)
	// Go maps never shrink: once most topics are gone, copy the rest to a
	// map of their size, so that an EventTarget that held many topics does
	// not keep their room. Each copy follows at least three times as many
	// removals, so the copies cost O(1) per removal.
	if n := len(t.topics); t.peak >= mapShrinkMin && n <= t.peak/4 {
		topics := make(map[topicKey]*targetTopic[T], n) // maps.Clone would keep the room
		maps.Copy(topics, t.topics)
		t.topics, t.peak = topics, n
	}
}

// mapShrinkMin is the peak below which forget never copies the topics map.
const mapShrinkMin = 1024

// topicError returns err, the error of op on topic, worded so that it names
// the topic and says "redispubsub:" once: as it is when its text already
// names topic (as the errors of this package's Publisher and Subscriber do,
// a channel being its prefix and its topic), otherwise with
// `redispubsub: <op> "<topic>": ` before it. It wraps err.
func topicError(op, topic string, err error) error {
	msg := err.Error()
	// A quoted name that is topic or ends with it: the topic or its channel.
	if topic != "" && strings.Contains(msg, strconv.Quote(topic)[1:]) {
		return err
	}
	return &wrappedError{
		msg: "redispubsub: " + op + " " + strconv.Quote(topic) + ": " + strings.TrimPrefix(msg, "redispubsub: "),
		err: err,
	}
}

// wrappedError is an error with its own text that wraps err.
type wrappedError struct {
	msg string
	err error
}

func (e *wrappedError) Error() string { return e.msg }
func (e *wrappedError) Unwrap() error { return e.err }

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
