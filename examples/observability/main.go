// Command observability serves the Prometheus metrics of a Watermill router
// on Redis Pub/Sub on one /metrics endpoint: Watermill's own, from
// components/metrics (handler execution time, publish time, messages
// received per handler), and the adapter's counters from the metrics package
// (what Publisher.Stats and Subscriber.Stats say: published, received,
// acked, dropped, gaps, reconnects, ...).
//
//	orders ──count──▶ orders.counted ──log──▶ (printed)
//
// It places an order every 500ms until Ctrl-C:
//
//	go run ./examples/observability                                    # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/observability # your Redis
//	curl -s http://127.0.0.1:9464/metrics | grep -E '^(redispubsub|watermill)_'
//	curl -s http://127.0.0.1:9464/readyz                               # ok, or 503 and why
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
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	watermillmetrics "github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
	"github.com/alkdev/watermill-redispubsub/metrics"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9464", "address of the /metrics endpoint")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *listen, 500*time.Millisecond); err != nil {
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
	s.say("metrics on http://%s/metrics; an order every %v until Ctrl-C", s.addr, every)
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

// service is the router, its Publisher and the /metrics endpoint.
type service struct {
	addr  string // where /metrics is served
	pub   *redispubsub.Publisher
	say   func(format string, args ...any)
	close func()
}

// start starts the router and the endpoint; close (idempotent) stops both
// and returns once everything has stopped.
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

	client, closeRedis, err := exampleredis.Client()
	if err != nil {
		return nil, err
	}
	closers = append(closers, closeRedis)
	logger := exampleredis.Logger()
	const prefix = "example:observability:" // every Redis channel is prefix + topic
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = pub.Close() })
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = sub.Close() })
	s.pub = pub

	// One registry for both: Watermill's metrics and the adapter's.
	registry := prometheus.NewRegistry()
	adapter := metrics.NewCollector()
	if err := errors.Join(adapter.AddPublisher("orders", pub), adapter.AddSubscriber("router", sub)); err != nil {
		return nil, err
	}
	if err := registry.Register(adapter); err != nil {
		return nil, err
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, logger)
	if err != nil {
		return nil, err
	}
	// Watermill's metrics: the router's publishers, subscribers and handlers.
	watermillmetrics.NewPrometheusMetricsBuilder(registry, "watermill", "").AddPrometheusRouterMetrics(router)
	router.AddHandler("count", "orders", sub, "orders.counted", pub, func(msg *message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage(watermill.NewUUID(), msg.Payload)}, nil
	})
	router.AddConsumerHandler("log", "orders.counted", sub, func(msg *message.Message) error {
		s.say("counted order %s", msg.Payload)
		return nil
	})
	routerCtx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(routerCtx) }()
	closers = append(closers, func() { stopRouter(); _ = router.Close(); <-routerDone })
	// Running is closed once Redis confirmed every handler's subscription.
	select {
	case <-router.Running():
	case err := <-routerDone:
		routerDone <- err
		return nil, fmt.Errorf("router stopped before it was running: %w", err)
	}

	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	s.addr = l.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	mux.Handle("GET /readyz", readyz(map[string]healthChecker{"publisher": pub, "subscriber": sub}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(l) }()
	closers = append(closers, func() { _ = srv.Close(); <-served })
	return s, nil
}

// placeOrder publishes order n on "orders".
func (s *service) placeOrder(ctx context.Context, n int) error {
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"order":`+strconv.Itoa(n)+`}`))
	msg.SetContext(ctx)
	return s.pub.Publish("orders", msg)
}
