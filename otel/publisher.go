package redispubsubotel

import (
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Publisher returns pub decorated: each message it publishes gets a
// producer span, and that span's context is written to the message's
// metadata (with the Tracing's propagator) before pub publishes it.
//
// The span's parent is the span in the message's context (msg.Context(),
// which DispatchEvent sets to its ctx and a router's Middleware to the
// consumer span); when that holds none, the trace context already in the
// message's metadata (a message passed on as it was received); else the
// span starts a new trace. The span ends when pub.Publish returns, with its
// error. Publish modifies the metadata of the messages it is given (the
// trace context keys only; a nil Metadata becomes a new map) and not their
// context. Close closes pub.
//
// The returned Publisher is safe for concurrent use when pub is. It also
// fits a router's AddPublisherDecorators (see DecoratePublisher).
func (t *Tracing) Publisher(pub message.Publisher) message.Publisher {
	return &publisher{pub: pub, t: t}
}

// DecoratePublisher is Publisher as a message.PublisherDecorator, for
// router.AddPublisherDecorators. It never fails.
func (t *Tracing) DecoratePublisher(pub message.Publisher) (message.Publisher, error) {
	return t.Publisher(pub), nil
}

type publisher struct {
	pub message.Publisher
	t   *Tracing
}

func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	var few [4]trace.Span
	spans := few[:0]
	for _, msg := range msgs {
		spans = append(spans, p.t.startProducer(topic, msg))
	}
	err := p.pub.Publish(topic, msgs...)
	for _, span := range spans {
		EndSpan(span, err)
	}
	return err
}

func (p *publisher) Close() error { return p.pub.Close() }

// startProducer starts msg's producer span and writes its context to msg's
// metadata.
func (t *Tracing) startProducer(topic string, msg *message.Message) trace.Span {
	if msg.Metadata == nil {
		msg.Metadata = make(message.Metadata)
	}
	carrier := propagation.MapCarrier(msg.Metadata)
	ctx := msg.Context()
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = t.propagator.Extract(ctx, carrier)
	}
	ctx, span := t.start(ctx, send, topic, msg)
	t.propagator.Inject(ctx, carrier)
	return span
}
