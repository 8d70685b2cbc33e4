package tests

// Helpers of the universal, router and CQRS tests. Their names start with
// "wm" so that other files of the package can add helpers of their own.

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// wmWaitTimeout bounds every wait of these tests; it only fires when
// something hangs.
const wmWaitTimeout = 20 * time.Second

// wmPubSub returns a Publisher and a Subscriber on srv, each with its own
// client, closed at the end of the test. configure, when not nil, adjusts
// the Subscriber's config (Client is already set).
func wmPubSub(t testing.TB, srv *redistest.Server, configure func(*redispubsub.SubscriberConfig)) (*redispubsub.Publisher, *redispubsub.Subscriber) {
	t.Helper()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, wmLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub, wmSubscriber(t, srv, configure)
}

// wmSubscriber returns a Subscriber on srv with its own client (or the one
// configure sets, when srv is nil), closed at the end of the test.
func wmSubscriber(t testing.TB, srv *redistest.Server, configure func(*redispubsub.SubscriberConfig)) *redispubsub.Subscriber {
	t.Helper()
	var config redispubsub.SubscriberConfig
	if srv != nil {
		config.Client = srv.NewClient(t)
	}
	if configure != nil {
		configure(&config)
	}
	sub, err := redispubsub.NewSubscriber(config, wmLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// wmNewClient returns a go-redis client of srv for code that runs outside
// the test goroutine; the caller closes it.
func wmNewClient(srv *redistest.Server) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: srv.Addr()})
}

// wmSubscribe subscribes to topic with a context cancelled at the end of the
// test, and returns the channel and the cancel func.
func wmSubscribe(t testing.TB, sub message.Subscriber, topic string) (<-chan *message.Message, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	return ch, cancel
}

// wmReceive reads one message or fails the test.
func wmReceive(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		require.True(t, ok, "output channel closed")
		return msg
	case <-time.After(wmWaitTimeout):
		t.Fatal("no message")
		return nil
	}
}

// wmRequireClosed waits until ch is closed, Nacking what it still sends.
func wmRequireClosed(t testing.TB, ch <-chan *message.Message) {
	t.Helper()
	timeout := time.After(wmWaitTimeout)
	for {
		select {
		case msg, ok := <-ch:
			if !ok {
				return
			}
			msg.Nack()
		case <-timeout:
			t.Fatal("output channel not closed")
		}
	}
}

// wmEventually polls cond until it holds, failing after wmWaitTimeout.
func wmEventually(t testing.TB, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	require.Eventually(t, cond, wmWaitTimeout, 5*time.Millisecond, msgAndArgs...)
}

// wmWait waits until ch is closed or sends, failing after wmWaitTimeout.
func wmWait[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wmWaitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// wmNumsub returns what PUBSUB NUMSUB says of channel.
func wmNumsub(t testing.TB, srv *redistest.Server, channel string) int64 {
	t.Helper()
	return srv.Do(t, "PUBSUB", "NUMSUB", channel).([]any)[1].(int64)
}

// wmMessages returns n messages with fresh UUIDs and the given payload.
func wmMessages(n int, payload string) message.Messages {
	msgs := make(message.Messages, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(payload))
	}
	return msgs
}

// wmLogger returns a logger that writes Info and Error logs to t.Log until
// the test's cleanups are over; later logs (from a goroutine that outlives
// the test by mistake) are dropped rather than panicking in t.Log.
func wmLogger(t testing.TB) watermill.LoggerAdapter {
	w := &wmTestWriter{t: t}
	// Registered before the Publisher or Subscriber that logs into it, so
	// it runs after their Close.
	t.Cleanup(w.stop)
	return watermill.NewStdLoggerWithOut(w, false, false)
}

type wmTestWriter struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *wmTestWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *wmTestWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}
