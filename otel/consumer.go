package redispubsubotel

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// StartConsumerSpan starts the consumer span of msg, received from topic,
// for a consumer that is not a router (a plain Subscribe loop): the trace
// context in msg's metadata, when there is one, is its parent; otherwise
// the span in msg.Context(), if any; otherwise it starts a new trace. It
// returns msg.Context() with the span in it, for the work on msg, and the
// span, which the caller ends (EndSpan records an error). It does not
// change msg.
func (t *Tracing) StartConsumerSpan(topic string, msg *message.Message) (context.Context, trace.Span) {
	ctx := t.propagator.Extract(msg.Context(), propagation.MapCarrier(msg.Metadata))
	return t.start(ctx, process, topic, msg)
}

// Middleware is a router middleware (message.HandlerMiddleware) that runs
// the handler inside the message's consumer span (see StartConsumerSpan; the
// topic is the handler's subscribe topic) and sets msg's context to one
// holding that span, so that the middleware inside it and the handler see
// it. Add it first (router.AddMiddleware(tracing.Middleware, ...)): Retry's
// attempts and PoisonQueue's publish then happen inside the span, and the
// poisoned message continues the trace. The span ends when the handler
// returns, with its error; a handler that panics ends it with an error too
// (the panic goes on). The messages the handler produces get the consumer
// span in their context, unless theirs holds a span already, so that a
// traced Publisher makes their producer spans its children.
func (t *Tracing) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (produced []*message.Message, err error) {
		ctx, span := t.StartConsumerSpan(message.SubscribeTopicFromCtx(msg.Context()), msg)
		returned := false
		defer func() {
			if !returned {
				EndSpan(span, errPanicked)
			}
		}()
		msg.SetContext(ctx)
		produced, err = h(msg)
		returned = true
		for _, m := range produced {
			if !trace.SpanContextFromContext(m.Context()).IsValid() {
				m.SetContext(trace.ContextWithSpan(m.Context(), span))
			}
		}
		EndSpan(span, err)
		return produced, err
	}
}

// EventTargetOption returns the option that gives an EventTarget's
// listeners a consumer span per received event (see StartConsumerSpan; the
// topic is the listener's): all the listeners of a topic run inside one
// span, with it in their context, and a payload that does not decode or a
// listener that panics ends it with that error. Dispatched events are
// traced by the Publisher the EventTarget is made with:
//
//	target, err := redispubsub.NewEventTarget[T](tracing.Publisher(pub), sub, tracing.EventTargetOption())
func (t *Tracing) EventTargetOption() redispubsub.EventTargetOption {
	return redispubsub.WithDeliveryWrapper(func(topic string, msg *message.Message, deliver func(context.Context) error) {
		ctx, span := t.StartConsumerSpan(topic, msg)
		EndSpan(span, deliver(ctx))
	})
}
