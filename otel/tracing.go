package redispubsubotel

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
	"go.opentelemetry.io/otel/trace"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// ScopeName is the instrumentation scope of the spans, the name of the
// tracer they come from.
const ScopeName = "github.com/alkdev/watermill-redispubsub/otel"

// DefaultSystem is the default messaging.system attribute.
const DefaultSystem = "redis"

// Tracing starts the spans of the publishers, routers, consumers and
// EventTargets it instruments; see New. It is safe for concurrent use, and
// one Tracing can serve them all.
type Tracing struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	system     attribute.KeyValue
}

// Option configures a Tracing; see New.
type Option func(*config)

type config struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
	system     string
}

// WithTracerProvider sets the TracerProvider the spans come from. Default:
// the global one (otel.GetTracerProvider), looked up once by New; until the
// program sets a global provider, that one delegates to it once it is set.
// A nil provider keeps the default.
func WithTracerProvider(provider trace.TracerProvider) Option {
	return func(c *config) { c.provider = provider }
}

// WithPropagator sets how the trace context is written to and read from a
// message's metadata. Default: W3C trace context and W3C baggage
// (propagation.TraceContext and propagation.Baggage), what a TypeScript peer
// with @opentelemetry/core's W3CTraceContextPropagator reads and writes; not
// the global propagator, which is a no-op until a program sets one (pass
// otel.GetTextMapPropagator() to use it). A nil propagator keeps the
// default.
func WithPropagator(propagator propagation.TextMapPropagator) Option {
	return func(c *config) { c.propagator = propagator }
}

// WithSystem sets the messaging.system attribute of every span. Default:
// DefaultSystem, "redis"; set it when the instrumented Pub/Sub is another
// one. An empty name keeps the default.
func WithSystem(name string) Option {
	return func(c *config) { c.system = name }
}

// New returns a Tracing configured by opts; every option has a default, so
// New() traces with the global TracerProvider and W3C propagation.
func New(opts ...Option) *Tracing {
	var c config
	for _, opt := range opts {
		opt(&c)
	}
	if c.provider == nil {
		c.provider = otel.GetTracerProvider()
	}
	if c.propagator == nil {
		c.propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if c.system == "" {
		c.system = DefaultSystem
	}
	return &Tracing{
		tracer:     c.provider.Tracer(ScopeName),
		propagator: c.propagator,
		system:     semconv.MessagingSystemKey.String(c.system),
	}
}

// operation is a messaging operation of the conventions: its name and type,
// and the kind of its spans (an option made once: each one made per span
// is an allocation).
type operation struct {
	name string
	typ  attribute.KeyValue
	kind trace.SpanStartOption
}

var (
	send    = operation{"send", semconv.MessagingOperationTypeSend, trace.WithSpanKind(trace.SpanKindProducer)}
	process = operation{"process", semconv.MessagingOperationTypeProcess, trace.WithSpanKind(trace.SpanKindConsumer)}
)

// start starts the span of op on msg, published to or received from topic,
// as a child of the span in ctx.
func (t *Tracing) start(ctx context.Context, op operation, topic string, msg *message.Message) (context.Context, trace.Span) {
	destination := topic
	attrs := make([]attribute.KeyValue, 0, 7)
	attrs = append(attrs,
		t.system,
		semconv.MessagingDestinationName(topic),
		op.typ,
		semconv.MessagingOperationName(op.name),
		semconv.MessagingMessageID(msg.UUID),
		semconv.MessagingMessageBodySize(len(msg.Payload)),
	)
	// A topic "type:id" has one id per entity: its low-cardinality form
	// names the span.
	if typ, id := redispubsub.SplitTopic(topic); id != "" {
		destination = typ + ":{id}"
		attrs = append(attrs, semconv.MessagingDestinationTemplate(destination))
	}
	name := op.name
	if destination != "" {
		name += " " + destination
	}
	return t.tracer.Start(ctx, name, op.kind, trace.WithAttributes(attrs...))
}

// EndSpan ends span, first recording err, when not nil, as the span's
// error: an exception event, the status Error and the attribute error.type.
func EndSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorType(err))
	}
	span.End()
}

// errPanicked is what a span records when the handler it covers panicked.
var errPanicked = errors.New("redispubsubotel: handler panicked")
