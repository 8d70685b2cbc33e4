// Command sse shows events published on Redis live in a browser: the page's
// EventSource reads the stream of the sse package's handler, one Server-Sent
// Event per envelope, named by its type, so the page listens with
// addEventListener("call.responded", ...) as a Go or TypeScript listener
// would.
//
//	go run ./examples/sse        # embedded Redis; open http://127.0.0.1:8080/
//	ADDR=127.0.0.1:9000 REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/sse
//
// It publishes a few events a second with a history (PublisherConfig.History),
// so each event's id is its position: when the connection drops, the
// browser reconnects with Last-Event-ID and the stream resumes after it.
// Publish more from anywhere, e.g. redis-cli against REDIS_URL:
//
//	PUBLISH example:call.responded:demo '{"type":"call.responded","id":"demo","payload":{"from":"redis-cli"}}'
package main

import (
	"context"
	_ "embed"
	"errors"
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
	"github.com/redis/go-redis/v9"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
	"github.com/alkdev/watermill-redispubsub/sse"
)

const (
	// prefix is the channel prefix of the example's Publisher and Subscriber.
	prefix = "example:"
	// topic is the one topic the page may stream.
	topic = "call.responded:demo"
	// tickInterval is how often the example publishes an event.
	tickInterval = 400 * time.Millisecond
)

//go:embed page.html
var page []byte

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sse:", err)
		os.Exit(1)
	}
}

// run serves on ADDR (default 127.0.0.1:8080) until ctx ends.
func run(ctx context.Context, out io.Writer) error {
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	client, closeRedis, err := exampleredis.Client()
	if err != nil {
		return err
	}
	defer closeRedis()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "open http://%s/ in a browser (Ctrl-C stops)\n", ln.Addr())
	return serve(ctx, ln, client, tickInterval, exampleredis.Logger())
}

// serve serves the page at "/" and the stream at "/events" on ln, and
// publishes an event on topic every interval (none when it is 0), until ctx
// ends; then it shuts the server down, which ends the open streams.
func serve(ctx context.Context, ln net.Listener, client redis.UniversalClient, interval time.Duration, logger watermill.LoggerAdapter) error {
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{
		Client:        client,
		ChannelPrefix: prefix,
		History:       redispubsub.History{Size: 1000}, // ids, and resuming after them
	}, logger)
	if err != nil {
		return err
	}
	defer pub.Close()
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return err
	}
	defer sub.Close()
	events, err := sse.NewHandler(sub, sse.Config{
		// The page's topic, to anyone. A real service checks the
		// request's session here.
		Authorize: func(_ *http.Request, topics []string) error {
			for _, t := range topics {
				if t != topic {
					return fmt.Errorf("topic %q is not served", t)
				}
			}
			return nil
		},
		Retry:  time.Second, // reconnect one second after a drop
		Logger: logger,
	})
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.Handle("/events", events)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(func() { _ = events.Close() }) // Shutdown waits for open streams: end them

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if interval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick(ctx, pub, interval, logger)
		}()
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err = <-served:
	case <-ctx.Done():
		shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		err = srv.Shutdown(shutdownCtx)
		stop()
		<-served
	}
	cancel()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// tick publishes {"from":"go","n":<n>} on topic every interval until ctx
// ends.
func tick(ctx context.Context, pub message.Publisher, interval time.Duration, logger watermill.LoggerAdapter) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"from":"go","n":%d}`, n))
		msg.SetContext(ctx)
		if err := pub.Publish(topic, msg); err != nil && ctx.Err() == nil {
			logger.Error("Cannot publish", err, nil)
		}
	}
}
