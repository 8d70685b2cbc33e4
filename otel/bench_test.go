package redispubsubotel_test

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
	redispubsubotel "github.com/alkdev/watermill-redispubsub/otel"
)

var benchRounds = flag.Int("rounds", 1, "BenchmarkTracing: how many times each case runs, in turn")

// discard is a span exporter that drops what it is given: the cost of the
// SDK without the cost of a backend.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkTracing measures what tracing costs end to end on one
// redis-server: a Publisher publishes 256 B messages in batches of 100, at
// most 1,000 ahead of a router whose one handler takes them, with tracing
// off (no decorator, no middleware), on with the API's no-op
// TracerProvider (instrumented code in a program that set up no SDK), on
// with the SDK exporting each span synchronously to an exporter that drops
// it, and on with the SDK's BatchSpanProcessor (what a service runs) to that
// exporter. An op is one message published and handled (two spans when
// traced); msg/s is the rate. The cases run in turn, -rounds times, so that
// a change of the machine's load falls on each alike; make bench runs three
// rounds and prints the medians (bench.awk).
func BenchmarkTracing(b *testing.B) {
	srv := redistest.Start(b)
	sdk := func(b *testing.B, opt sdktrace.TracerProviderOption) *redispubsubotel.Tracing {
		tp := sdktrace.NewTracerProvider(opt)
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		return redispubsubotel.New(redispubsubotel.WithTracerProvider(tp))
	}
	type benchCase struct {
		name    string
		tracing func(b *testing.B) *redispubsubotel.Tracing // nil: off
	}
	cases := []benchCase{
		{"off", nil},
		{"noop-provider", func(*testing.B) *redispubsubotel.Tracing {
			return redispubsubotel.New(redispubsubotel.WithTracerProvider(noop.NewTracerProvider()))
		}},
		{"sdk-sync-discard", func(b *testing.B) *redispubsubotel.Tracing {
			return sdk(b, sdktrace.WithSyncer(discard{}))
		}},
		{"sdk-batch-discard", func(b *testing.B) *redispubsubotel.Tracing {
			return sdk(b, sdktrace.WithBatcher(discard{}))
		}},
	}
	for round := 1; round <= *benchRounds; round++ {
		for _, tc := range cases {
			b.Run(fmt.Sprintf("round-%d/%s", round, tc.name), func(b *testing.B) {
				var tracing *redispubsubotel.Tracing
				if tc.tracing != nil {
					tracing = tc.tracing(b)
				}
				benchPublishConsume(b, srv, tracing)
			})
		}
	}
}

// benchPublishConsume publishes b.N messages through a router's handler,
// traced by tracing unless it is nil.
func benchPublishConsume(b *testing.B, srv *redistest.Server, tracing *redispubsubotel.Tracing) {
	const (
		batch = 100
		ahead = 1000
	)
	plainPub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(b)}, nil)
	require.NoError(b, err)
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: srv.NewClient(b)}, nil)
	require.NoError(b, err)
	b.Cleanup(func() { _ = sub.Close(); _ = plainPub.Close() })
	var pub message.Publisher = plainPub
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: testutil.Timeout}, watermill.NopLogger{})
	require.NoError(b, err)
	if tracing != nil {
		pub = tracing.Publisher(plainPub)
		r.AddMiddleware(tracing.Middleware)
	}
	window := make(chan struct{}, ahead)
	var handled atomic.Int64
	done := make(chan struct{})
	var total atomic.Int64
	r.AddConsumerHandler("bench", "bench", sub, func(*message.Message) error {
		<-window
		if handled.Add(1) == total.Load() {
			close(done)
		}
		return nil
	})
	testutil.RunRouter(b, r)
	payload := `{"data":"` + strings.Repeat("x", 256-11) + `"}`

	total.Store(int64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	msgs := make([]*message.Message, 0, batch)
	for sent := 0; sent < b.N; sent += len(msgs) {
		msgs = msgs[:0]
		for range min(batch, b.N-sent) {
			window <- struct{}{}
			msgs = append(msgs, newMessage(payload))
		}
		require.NoError(b, pub.Publish("bench", msgs...))
	}
	testutil.Wait(b, done, "every message to be handled")
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}
