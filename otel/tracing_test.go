package redispubsubotel_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
	redispubsubotel "github.com/alkdev/watermill-redispubsub/otel"
)

// The defaults: New() takes the global TracerProvider and writes W3C trace
// context and baggage into the metadata. A service publishes inside a span
// of its own, with baggage; a consumer without a router (a Subscribe loop)
// continues the trace: its span is the child of the producer span, and its
// context has the baggage.
func TestDefaultsCarryTraceAndBaggageThroughRedis(t *testing.T) {
	rec := &spans{t: t, ended: make(chan sdktrace.ReadOnlySpan, 16)}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	previous := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(previous)
		assert.NoError(t, tp.Shutdown(context.Background()))
	})
	tracing := redispubsubotel.New()

	srv := redistest.Start(t)
	pub, sub := pubSub(t, srv, nil)
	messages, _ := testutil.Subscribe(t, sub, "orders")

	ctx, request := startSpan(tp)
	member, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	ctx = baggage.ContextWithBaggage(ctx, bag)
	msg := newMessage(`{"order":1}`)
	msg.Metadata.Set("kept", "yes")
	msg.SetContext(ctx)
	require.NoError(t, tracing.Publisher(pub).Publish("orders", msg))
	request.End()

	got := testutil.Receive(t, messages)
	consumeCtx, span := tracing.StartConsumerSpan("orders", got)
	assert.Equal(t, "acme", baggage.FromContext(consumeCtx).Member("tenant").Value(), "baggage crossed Redis")
	assert.Equal(t, span.SpanContext(), trace.SpanContextFromContext(consumeCtx))
	redispubsubotel.EndSpan(span, nil)
	got.Ack()

	s := rec.next(3)
	requireChild(t, s["request"], s["send orders"])
	requireChild(t, s["send orders"], s["process orders"])
	assert.True(t, s["process orders"].Parent().IsRemote(), "the parent came through Redis")
	assert.Equal(t, trace.SpanKindProducer, s["send orders"].SpanKind())
	assert.Equal(t, trace.SpanKindConsumer, s["process orders"].SpanKind())
	assert.Equal(t, redispubsubotel.ScopeName, s["send orders"].InstrumentationScope().Name)

	// The metadata as the consumer got it: the W3C keys beside the
	// service's own; the Subscriber stripped the sequence stamp, which
	// still did its work (no gap).
	assert.Equal(t, "yes", got.Metadata.Get("kept"))
	assert.Regexp(t, `^00-`+s["send orders"].SpanContext().TraceID().String()+`-`+s["send orders"].SpanContext().SpanID().String()+`-01$`,
		got.Metadata.Get("traceparent"))
	assert.Equal(t, "tenant=acme", got.Metadata.Get("baggage"))
	assert.Len(t, got.Metadata, 3, "%v", got.Metadata)
	assert.Zero(t, sub.Stats().Gaps)
	rec.none()
}

// Publisher → Redis → router: one trace from the service's span through
// the handler, the message it produces and that message's handler; each
// consumer span is the child of its producer span, and the handlers see
// their consumer span in the message's context.
func TestRouterTraceAcrossRedis(t *testing.T) {
	tracing, rec, tp := newTracing(t)
	srv := redistest.Start(t)
	plainPub, sub := pubSub(t, srv, nil)
	pub := tracing.Publisher(plainPub)

	handlerSpans := make(chan trace.SpanContext, 2)
	r := testutil.NewRouter(t)
	r.AddMiddleware(tracing.Middleware)
	r.AddHandler("count", "orders", sub, "orders.counted", pub, func(msg *message.Message) ([]*message.Message, error) {
		handlerSpans <- trace.SpanContextFromContext(msg.Context())
		return []*message.Message{newMessage(`{"counted":1}`)}, nil
	})
	r.AddConsumerHandler("log", "orders.counted", sub, func(msg *message.Message) error {
		handlerSpans <- trace.SpanContextFromContext(msg.Context())
		return nil
	})
	testutil.RunRouter(t, r)

	ctx, request := startSpan(tp)
	msg := newMessage(`{"order":1}`)
	msg.SetContext(ctx)
	require.NoError(t, pub.Publish("orders", msg))
	request.End()
	countSpan := testutil.Wait(t, handlerSpans, "the count handler")
	logSpan := testutil.Wait(t, handlerSpans, "the log handler")

	s := rec.next(5)
	requireChild(t, s["request"], s["send orders"])
	requireChild(t, s["send orders"], s["process orders"])
	requireChild(t, s["process orders"], s["send orders.counted"])
	requireChild(t, s["send orders.counted"], s["process orders.counted"])
	assert.Equal(t, s["process orders"].SpanContext(), countSpan, "the handler runs in the consumer span")
	assert.Equal(t, s["process orders.counted"].SpanContext(), logSpan)
	for _, span := range s {
		assert.Equal(t, codes.Unset, span.Status().Code, span.Name())
	}

	send, process := attrs(s["send orders"]), attrs(s["process orders"])
	for key, want := range map[attribute.Key]attribute.Value{
		"messaging.system":            attribute.StringValue("redis"),
		"messaging.destination.name":  attribute.StringValue("orders"),
		"messaging.operation.type":    attribute.StringValue("send"),
		"messaging.operation.name":    attribute.StringValue("send"),
		"messaging.message.id":        attribute.StringValue(msg.UUID),
		"messaging.message.body.size": attribute.IntValue(len(`{"order":1}`)),
	} {
		assert.Equal(t, want, send[key], "send: %s", key)
		if key != "messaging.operation.type" && key != "messaging.operation.name" {
			assert.Equal(t, want, process[key], "process: %s", key)
		}
	}
	assert.Equal(t, attribute.StringValue("process"), process["messaging.operation.type"])
	assert.Equal(t, attribute.StringValue("process"), process["messaging.operation.name"])
	assert.NotContains(t, send, attribute.Key("messaging.destination.template"), "a topic without an id has no template")
	rec.none()
}

// Retry and PoisonQueue, inside the tracing middleware, keep the trace:
// every attempt runs in the one consumer span, and the poisoned message's
// producer span is its child, so its own consumer continues the trace.
func TestRetryAndPoisonQueueKeepTheTrace(t *testing.T) {
	tracing, rec, _ := newTracing(t)
	srv := redistest.Start(t)
	plainPub, sub := pubSub(t, srv, nil)
	pub := tracing.Publisher(plainPub)

	poisonQueue, err := middleware.PoisonQueue(pub, "poison")
	require.NoError(t, err)
	attempts := make(chan trace.SpanContext, 8)
	poisoned := make(chan *message.Message, 1)
	r := testutil.NewRouter(t)
	r.AddMiddleware(
		tracing.Middleware,
		poisonQueue,
		middleware.Retry{MaxRetries: 2, InitialInterval: time.Millisecond, Logger: testutil.Logger(t)}.Middleware,
	)
	r.AddConsumerHandler("charge", "payments", sub, func(msg *message.Message) error {
		attempts <- trace.SpanContextFromContext(msg.Context())
		return errors.New("card declined")
	})
	r.AddConsumerHandler("poison-log", "poison", sub, func(msg *message.Message) error {
		poisoned <- msg
		return nil
	})
	testutil.RunRouter(t, r)

	msg := newMessage(`{"amount":42}`)
	require.NoError(t, pub.Publish("payments", msg))
	got := testutil.Wait(t, poisoned, "the poisoned message")
	assert.Equal(t, msg.UUID, got.UUID)
	assert.Equal(t, "card declined", got.Metadata.Get(middleware.ReasonForPoisonedKey))

	s := rec.next(4)
	requireChild(t, s["send payments"], s["process payments"])
	requireChild(t, s["process payments"], s["send poison"])
	requireChild(t, s["send poison"], s["process poison"])
	assert.False(t, s["send payments"].Parent().IsValid(), "published outside any span: a new trace")
	for i := range 3 {
		assert.Equal(t, s["process payments"].SpanContext(), testutil.Wait(t, attempts, "an attempt"), "attempt %d", i+1)
	}
	assert.Empty(t, attempts)
	rec.none()
}

// A message that carries no trace context (published without tracing)
// starts a new trace at its consumer, and is handled as usual.
func TestUntracedMessageStartsANewTrace(t *testing.T) {
	tracing, rec, _ := newTracing(t)
	srv := redistest.Start(t)
	pub, sub := pubSub(t, srv, nil)

	handled := consumeSpans(t, tracing, sub, "orders")
	require.NoError(t, pub.Publish("orders", newMessage(`{"order":1}`)))
	sc := testutil.Wait(t, handled, "the handler")
	span := rec.next(1)["process orders"]
	require.NotNil(t, span)
	assert.False(t, span.Parent().IsValid(), "a root span")
	assert.Equal(t, span.SpanContext(), sc)
	rec.none()
}

// RawJSONMarshaler puts the payload alone on the wire: the trace context in
// the metadata does not travel. The producer span is recorded, the consumer
// starts a new trace, and nothing fails.
func TestRawJSONIsUntraceable(t *testing.T) {
	tracing, rec, _ := newTracing(t)
	srv := redistest.Start(t)
	plainPub, sub := pubSub(t, srv, redispubsub.RawJSONMarshaler{})
	pub := tracing.Publisher(plainPub)

	handled := make(chan *message.Message, 1)
	r := testutil.NewRouter(t)
	r.AddMiddleware(tracing.Middleware)
	r.AddConsumerHandler("log", "user.created", sub, func(msg *message.Message) error {
		handled <- msg
		return nil
	})
	testutil.RunRouter(t, r)

	msg := newMessage(`{"id":7}`)
	require.NoError(t, pub.Publish("user.created", msg))
	assert.NotEmpty(t, msg.Metadata.Get("traceparent"), "written to the metadata, which RawJSON does not send")
	got := testutil.Wait(t, handled, "the handler")
	assert.JSONEq(t, `{"id":7}`, string(got.Payload))
	assert.Empty(t, got.Metadata.Get("traceparent"))

	s := rec.next(2)
	assert.False(t, s["process user.created"].Parent().IsValid(), "a root span")
	assert.NotEqual(t, s["send user.created"].SpanContext().TraceID(), s["process user.created"].SpanContext().TraceID())
	assert.Equal(t, codes.Unset, s["process user.created"].Status().Code)
	rec.none()
}

type call struct {
	OK bool `json:"ok"`
}

// The EventTarget: DispatchEvent through a traced Publisher has a producer
// span, child of the span in its ctx; the listeners of the topic share one
// consumer span, its child, in their context; a listener that panics marks
// that span as failed. A topic "type:id" names its spans by "type:{id}".
func TestEventTargetTrace(t *testing.T) {
	tracing, rec, tp := newTracing(t)
	srv := redistest.Start(t)
	pub, sub := pubSub(t, srv, nil)
	target, err := redispubsub.NewEventTarget[call](tracing.Publisher(pub), sub, tracing.EventTargetOption())
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, target.Close()) })

	const topic = "call.responded:uuid-123"
	seen := make(chan trace.SpanContext, 4)
	for range 2 {
		_, err := target.AddEventListener(context.Background(), topic, func(ctx context.Context, ev redispubsub.Event[call]) {
			seen <- trace.SpanContextFromContext(ctx)
			if !ev.Payload.OK {
				panic("not ok")
			}
		})
		require.NoError(t, err)
	}

	ctx, request := startSpan(tp)
	require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[call]{Type: "call.responded", ID: "uuid-123", Payload: call{OK: true}}))
	request.End()
	first, second := testutil.Wait(t, seen, "the first listener"), testutil.Wait(t, seen, "the second listener")

	s := rec.next(3)
	send, process := s["send call.responded:{id}"], s["process call.responded:{id}"]
	require.NotNil(t, send, "%v", names(s))
	require.NotNil(t, process, "%v", names(s))
	requireChild(t, s["request"], send)
	requireChild(t, send, process)
	assert.Equal(t, process.SpanContext(), first)
	assert.Equal(t, process.SpanContext(), second, "one span for all the listeners of the event")
	for _, span := range []sdktrace.ReadOnlySpan{send, process} {
		a := attrs(span)
		assert.Equal(t, attribute.StringValue(topic), a["messaging.destination.name"], span.Name())
		assert.Equal(t, attribute.StringValue("call.responded:{id}"), a["messaging.destination.template"], span.Name())
	}
	assert.Equal(t, codes.Unset, process.Status().Code)

	// Both listeners panic on this one: the span says so.
	require.NoError(t, target.DispatchEvent(context.Background(), redispubsub.Event[call]{Type: "call.responded", ID: "uuid-123"}))
	testutil.Wait(t, seen, "the first listener")
	testutil.Wait(t, seen, "the second listener")
	s = rec.next(2)
	process = s["process call.responded:{id}"]
	require.NotNil(t, process, "%v", names(s))
	assert.Equal(t, codes.Error, process.Status().Code)
	assert.Contains(t, process.Status().Description, "not ok")
	assert.Len(t, process.Events(), 1, "the error is recorded once, the panics joined")
	rec.none()
}

// A Publish that fails ends its spans with the error.
func TestFailedPublishMarksItsSpans(t *testing.T) {
	tracing, rec, _ := newTracing(t)
	srv := redistest.Start(t)
	plainPub, _ := pubSub(t, srv, nil)
	require.NoError(t, plainPub.Close())

	err := tracing.Publisher(plainPub).Publish("orders", newMessage(`{"n":1}`), newMessage(`{"n":2}`))
	require.Error(t, err)
	for range 2 {
		span := testutil.Wait(t, rec.ended, "a span")
		assert.Equal(t, "send orders", span.Name())
		assert.Equal(t, codes.Error, span.Status().Code)
		assert.Equal(t, err.Error(), span.Status().Description)
		assert.NotEmpty(t, attrs(span)["error.type"].AsString())
	}
	rec.none()
}

// recordingPublisher keeps what it is given to publish, and fails when told.
type recordingPublisher struct {
	published []*message.Message
	err       error
	closed    bool
}

func (p *recordingPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.published = append(p.published, msgs...)
	return p.err
}

func (p *recordingPublisher) Close() error { p.closed = true; return nil }

// The options: a propagator of one's own decides the metadata keys, the
// system names the messaging.system; a message without metadata gets a
// map; a message passed on as it was received (its context holds no span,
// its metadata a trace context) continues its trace; Close closes the
// decorated Publisher.
func TestOptionsAndEdges(t *testing.T) {
	tracing, rec, _ := newTracing(t,
		redispubsubotel.WithPropagator(propagation.TraceContext{}),
		redispubsubotel.WithSystem("gochannel"))
	inner := &recordingPublisher{}
	pub := tracing.Publisher(inner)

	member, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	msg := &message.Message{UUID: watermill.NewUUID(), Payload: []byte("{}")} // no Metadata
	msg.SetContext(baggage.ContextWithBaggage(context.Background(), bag))
	require.NoError(t, pub.Publish("a", msg))
	first := rec.next(1)["send a"]
	require.NotNil(t, first)
	assert.Equal(t, attribute.StringValue("gochannel"), attrs(first)["messaging.system"])
	assert.Contains(t, msg.Metadata, "traceparent")
	assert.NotContains(t, msg.Metadata, "baggage", "TraceContext alone writes no baggage")

	// Passed on as received: a fresh context, the metadata kept.
	relayed := message.NewMessage(watermill.NewUUID(), msg.Payload)
	for k, v := range msg.Metadata {
		relayed.Metadata.Set(k, v)
	}
	require.NoError(t, pub.Publish("b", relayed))
	requireChild(t, first, rec.next(1)["send b"])

	require.NoError(t, pub.Close())
	assert.True(t, inner.closed)

	// As a router's publisher decorator.
	decorated, err := tracing.DecoratePublisher(inner)
	require.NoError(t, err)
	require.NoError(t, decorated.Publish("c", newMessage("{}")))
	assert.False(t, rec.next(1)["send c"].Parent().IsValid())
	assert.Len(t, inner.published, 3)
	rec.none()
}

// A handler that fails or panics ends the consumer span with an error; the
// error is returned, the panic goes on (to the router, which recovers it).
func TestMiddlewareMarksFailures(t *testing.T) {
	tracing, rec, _ := newTracing(t)
	declined := errors.New("card declined")
	handler := tracing.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, declined })
	_, err := handler(newMessage("{}"))
	assert.Same(t, declined, err)
	span := testutil.Wait(t, rec.ended, "the span")
	assert.Equal(t, codes.Error, span.Status().Code)
	assert.Equal(t, "card declined", span.Status().Description)
	require.Len(t, span.Events(), 1)
	assert.Equal(t, "exception", span.Events()[0].Name)

	handler = tracing.Middleware(func(*message.Message) ([]*message.Message, error) { panic("boom") })
	assert.PanicsWithValue(t, "boom", func() { _, _ = handler(newMessage("{}")) })
	span = testutil.Wait(t, rec.ended, "the span")
	assert.Equal(t, "process", span.Name(), "no subscribe topic outside a router")
	assert.Equal(t, codes.Error, span.Status().Code)
	assert.Equal(t, "redispubsubotel: handler panicked", span.Status().Description)
	rec.none()
}
