// Command observability is a service on Redis Pub/Sub that shows its
// traces beside its metrics: every span, written by OpenTelemetry's stdout
// exporter as one JSON object per line, and the adapter's Prometheus
// counters on /metrics. It lives in the otel module because the core module
// does not depend on OpenTelemetry; ../../../examples/observability is the
// same kind of service with Watermill's metrics and no tracing.
//
//	placeOrder ──orders──▶ router handler "count" ──orders.counted──▶ EventTarget listener (prints)
//
// An order is placed inside a span of the service ("place order"); the
// traced Publisher writes its context into the message's metadata, the
// router's middleware and the EventTarget's option continue it, so each
// order is one trace of five spans: place order, send orders, process
// orders, send orders.counted, process orders.counted.
//
//	go run ./examples/observability                                    # in otel/: embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/observability # your Redis
//	curl -s http://127.0.0.1:9465/metrics | grep '^redispubsub_'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
	"github.com/alkdev/watermill-redispubsub/metrics"
	redispubsubotel "github.com/alkdev/watermill-redispubsub/otel"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9465", "address of the /metrics endpoint")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *listen, time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "observability:", err)
		os.Exit(1)
	}
}

// run serves the service until ctx ends, placing an order every interval.
func run(ctx context.Context, out io.Writer, listen string, every time.Duration) error {
	s, err := start(ctx, out, listen)
	if err != nil {
		return err
	}
	defer s.close()
	s.say("metrics on http://%s/metrics; an order every %v until Ctrl-C; each span is a JSON line", s.addr, every)
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			if err := s.placeOrder(ctx, n); err != nil {
				return err
			}
		}
	}
}

type order struct {
	Order int `json:"order"`
}

// service is the traced router, EventTarget and Publisher, and /metrics.
type service struct {
	addr   string // where /metrics is served
	pub    message.Publisher
	tracer trace.Tracer
	say    func(format string, args ...any)
	close  func()
}

// start starts the service; close (idempotent) stops it, once every span
// is written.
func start(ctx context.Context, out io.Writer, listen string) (s *service, err error) {
	s = &service{say: exampleredis.Printer(out)}
	var closers []func()
	var once sync.Once
	s.close = func() {
		once.Do(func() {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		})
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	// Tracing: the SDK batches the spans to the stdout exporter, which
	// writes one JSON object per span, through the same printer as the
	// rest of the story.
	exporter, err := stdouttrace.New(stdouttrace.WithWriter(writerFunc(func(b []byte) { s.say("%s", b[:len(b)-1]) })))
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
	closers = append(closers, func() { _ = tp.Shutdown(context.Background()) })
	tracing := redispubsubotel.New(redispubsubotel.WithTracerProvider(tp))
	s.tracer = tp.Tracer("example/observability")

	client, closeRedis, err := exampleredis.Client()
	if err != nil {
		return nil, err
	}
	closers = append(closers, closeRedis)
	logger := exampleredis.Logger()
	const prefix = "example:traced:" // every Redis channel is prefix + topic
	plainPub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = plainPub.Close() })
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = sub.Close() })
	s.pub = tracing.Publisher(plainPub)

	// Metrics: the adapter's counters (its Stats), on /metrics.
	registry := prometheus.NewRegistry()
	adapter := metrics.NewCollector()
	if err := errors.Join(adapter.AddPublisher("orders", plainPub), adapter.AddSubscriber("service", sub), registry.Register(adapter)); err != nil {
		return nil, err
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, logger)
	if err != nil {
		return nil, err
	}
	router.AddMiddleware(tracing.Middleware) // first: the other middleware runs inside its span
	router.AddHandler("count", "orders", sub, "orders.counted", s.pub, func(msg *message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage(watermill.NewUUID(), msg.Payload)}, nil
	})
	routerCtx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(routerCtx) }()
	closers = append(closers, func() { stopRouter(); _ = router.Close(); <-routerDone })
	select {
	case <-router.Running():
	case err := <-routerDone:
		routerDone <- err
		return nil, fmt.Errorf("router stopped before it was running: %w", err)
	}

	target, err := redispubsub.NewEventTarget[order](s.pub, sub, tracing.EventTargetOption())
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = target.Close() })
	if _, err := target.AddEventListener(ctx, "orders.counted", func(ctx context.Context, ev redispubsub.Event[order]) {
		s.say("counted order %d, trace %s", ev.Payload.Order, trace.SpanContextFromContext(ctx).TraceID())
	}); err != nil {
		return nil, err
	}

	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	s.addr = l.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(l) }()
	closers = append(closers, func() { _ = srv.Close(); <-served })
	return s, nil
}

// placeOrder publishes order n on "orders", inside a span of its own.
func (s *service) placeOrder(ctx context.Context, n int) error {
	ctx, span := s.tracer.Start(ctx, "place order")
	defer span.End()
	msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"order":%d}`, n))
	msg.SetContext(ctx)
	return s.pub.Publish("orders", msg)
}

// writerFunc is an io.Writer that hands each write to a func.
type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }
