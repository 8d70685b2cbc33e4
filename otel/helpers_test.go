package redispubsubotel_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
	redispubsubotel "github.com/alkdev/watermill-redispubsub/otel"
)

// spans is an SDK span processor that hands every ended span to a channel,
// so that a test waits for the spans it expects instead of polling.
type spans struct {
	t     testing.TB
	ended chan sdktrace.ReadOnlySpan
}

func (s *spans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (s *spans) OnEnd(span sdktrace.ReadOnlySpan)                { s.ended <- span }
func (s *spans) Shutdown(context.Context) error                  { return nil }
func (s *spans) ForceFlush(context.Context) error                { return nil }

// next returns the next n spans to end, by name; it fails the test on a
// name seen twice.
func (s *spans) next(n int) map[string]sdktrace.ReadOnlySpan {
	s.t.Helper()
	got := make(map[string]sdktrace.ReadOnlySpan, n)
	for range n {
		span := testutil.Wait(s.t, s.ended, fmt.Sprintf("span %d of %d (have %v)", len(got)+1, n, names(got)))
		require.NotContains(s.t, got, span.Name(), "two spans named %q", span.Name())
		got[span.Name()] = span
	}
	return got
}

// none checks that no span ended beyond those taken.
func (s *spans) none() {
	s.t.Helper()
	select {
	case span := <-s.ended:
		s.t.Fatalf("unexpected span %q", span.Name())
	default:
	}
}

func names(m map[string]sdktrace.ReadOnlySpan) []string {
	var out []string
	for name := range m {
		out = append(out, name)
	}
	return out
}

// newTracing returns a Tracing whose spans, from a TracerProvider of the
// test's own (sampling everything), go to the returned recorder, and that
// provider, shut down at the end of the test.
func newTracing(t testing.TB, opts ...redispubsubotel.Option) (*redispubsubotel.Tracing, *spans, *sdktrace.TracerProvider) {
	rec := &spans{t: t, ended: make(chan sdktrace.ReadOnlySpan, 64)}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { assert.NoError(t, tp.Shutdown(context.Background())) })
	return redispubsubotel.New(append([]redispubsubotel.Option{redispubsubotel.WithTracerProvider(tp)}, opts...)...), rec, tp
}

// pubSub returns a Publisher and a Subscriber on srv with their own
// clients, closed at the end of the test; marshaler nil is the default.
func pubSub(t testing.TB, srv *redistest.Server, marshaler redispubsub.Marshaler) (*redispubsub.Publisher, *redispubsub.Subscriber) {
	t.Helper()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t), Marshaler: marshaler}, nil)
	require.NoError(t, err)
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: srv.NewClient(t), Marshaler: marshaler}, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, sub.Close())
		assert.NoError(t, pub.Close())
	})
	return pub, sub
}

// consumeSpans runs a router, traced by tracing, whose one handler takes
// topic's messages from sub and sends the span context it runs in (other
// consumers of a test may send theirs to it too).
func consumeSpans(t testing.TB, tracing *redispubsubotel.Tracing, sub message.Subscriber, topic string) chan trace.SpanContext {
	t.Helper()
	handled := make(chan trace.SpanContext, 8)
	r := testutil.NewRouter(t)
	r.AddMiddleware(tracing.Middleware)
	r.AddConsumerHandler("consume", topic, sub, func(msg *message.Message) error {
		handled <- trace.SpanContextFromContext(msg.Context())
		return nil
	})
	testutil.RunRouter(t, r)
	return handled
}

func newMessage(payload string) *message.Message {
	return message.NewMessage(watermill.NewUUID(), []byte(payload))
}

// startSpan starts a span of the test's own ("request"), as a service does
// before it publishes.
func startSpan(tp trace.TracerProvider) (context.Context, trace.Span) {
	return tp.Tracer("test").Start(context.Background(), "request")
}

// requireChild checks that child's parent is parent, in the same trace.
func requireChild(t testing.TB, parent, child sdktrace.ReadOnlySpan) {
	t.Helper()
	require.Equal(t, parent.SpanContext().TraceID(), child.SpanContext().TraceID(), "%q and %q in one trace", parent.Name(), child.Name())
	require.Equal(t, parent.SpanContext().SpanID(), child.Parent().SpanID(), "%q is the parent of %q", parent.Name(), child.Name())
}

// attrs returns a span's attributes by key.
func attrs(span sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value)
	for _, kv := range span.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}
