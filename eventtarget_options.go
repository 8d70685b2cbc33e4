package redispubsub

import (
	"context"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// EventTargetOption configures an EventTarget; see NewEventTarget.
type EventTargetOption func(*eventTargetOptions)

type eventTargetOptions struct {
	logger  watermill.LoggerAdapter
	onError func(topic string, err error)
	wrap    DeliveryWrapper
}

// DeliveryWrapper runs around the delivery of one received message to the
// listeners of its topic; see WithDeliveryWrapper.
type DeliveryWrapper func(topic string, msg *message.Message, deliver func(ctx context.Context) error)

// WithDeliveryWrapper sets a function that the EventTarget calls for every
// message it receives, in place of delivering it directly, so that tracing,
// logging or timing can run around the listeners (the tracing of the
// module github.com/alkdev/watermill-redispubsub/otel is one).
//
// wrap is called on the topic's delivery goroutine with the topic of the
// subscription, the message and deliver. deliver decodes the payload and
// calls the topic's listeners with ctx as their context (where they would
// otherwise get msg.Context()); it returns nil when every listener returned,
// else the error it also reported to the error hook: one wrapping
// ErrPayloadDecode (no listener was called), or those wrapping
// ErrListenerPanic, joined. wrap must call deliver once: if it does not,
// no listener runs. The message is Acked after wrap returned, as without a
// wrapper; wrap must not Ack or Nack it, and a panic in wrap is not
// recovered. Default: none.
func WithDeliveryWrapper(wrap DeliveryWrapper) EventTargetOption {
	return func(o *eventTargetOptions) { o.wrap = wrap }
}

// WithErrorHandler sets a hook that the EventTarget calls with what goes wrong
// while it delivers events, so that nothing fails silently:
//
//   - a payload that does not decode into the event type T (the error wraps
//     ErrPayloadDecode; the message is Acked and no listener is called);
//   - a listener that panicked (the error wraps ErrListenerPanic; the
//     remaining listeners still get the event and the message is still Acked);
//   - a subscription whose channel the Subscriber closed on its own, for
//     example because it was closed (the error wraps ErrSubscriptionClosed).
//
// topic is the topic of the subscription the problem happened on. The hook is
// called synchronously on that topic's delivery goroutine, so it delays that
// topic, and only that topic, while it runs; a panic in it is recovered and
// logged. Every such error is also logged at error level whether or not a
// hook is set. Default: none.
func WithErrorHandler(handler func(topic string, err error)) EventTargetOption {
	return func(o *eventTargetOptions) { o.onError = handler }
}

// WithLogger sets the logger of the EventTarget. Default: watermill.NopLogger.
func WithLogger(logger watermill.LoggerAdapter) EventTargetOption {
	return func(o *eventTargetOptions) { o.logger = logger }
}

// ListenerOption configures one listener; see EventTarget.AddEventListener.
type ListenerOption func(*listenerOptions)

type listenerOptions struct {
	once bool
	ctx  context.Context
	from *Position
}

// Once makes the listener run for at most one event: it is removed just
// before it is called for the first time, so it runs once even if it panics
// or events arrive back to back.
func Once() ListenerOption {
	return func(o *listenerOptions) { o.once = true }
}

// WithContext ties the listener's lifetime to ctx: the listener is removed
// when ctx is done, as if its Remove had been called. A listener that is
// running when ctx is done finishes its current event. If ctx is done before
// AddEventListener returns, AddEventListener returns ctx's error and adds
// nothing.
func WithContext(ctx context.Context) ListenerOption {
	return func(o *listenerOptions) { o.ctx = ctx }
}

// FromPosition makes the listener start after pos, a position an event of
// its topic carried (PositionOf(ev.Message); a browser's Last-Event-ID): it
// receives the events the channel's history holds after pos, then the live
// ones, with no gap and no duplicate between them. The listener gets a
// subscription of its own (SubscribeFrom), not shared with the topic's
// other listeners. AddEventListener returns an error wrapping
// ErrPositionLost when the history no longer holds what follows pos, and
// one wrapping ErrPositionsUnsupported when the EventTarget's Subscriber
// does not implement PositionSubscriber.
func FromPosition(pos Position) ListenerOption {
	return func(o *listenerOptions) { o.from = &pos }
}
