package redispubsub_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// waitTimeout bounds every wait in these tests; it only ever fires when
// something hangs.
const waitTimeout = 20 * time.Second

type fixture struct {
	srv *redistest.Server
	pub *redispubsub.Publisher
	sub *redispubsub.Subscriber
}

// newFixture starts a server and a Publisher and a Subscriber on it, closed
// at the end of the test. configure may adjust the Subscriber's config.
func newFixture(t *testing.T, configure func(*redispubsub.SubscriberConfig), serverArgs ...string) *fixture {
	t.Helper()
	srv := redistest.Start(t, serverArgs...)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	subConfig := redispubsub.SubscriberConfig{Client: srv.NewClient(t)}
	if configure != nil {
		configure(&subConfig)
	}
	sub, err := redispubsub.NewSubscriber(subConfig, testLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, sub.Close())
		require.NoError(t, pub.Close())
	})
	return &fixture{srv: srv, pub: pub, sub: sub}
}

// numsub returns what PUBSUB NUMSUB says of channel.
func (f *fixture) numsub(t *testing.T, channel string) int64 {
	t.Helper()
	reply := f.srv.Do(t, "PUBSUB", "NUMSUB", channel).([]any)
	return reply[1].(int64)
}

func jsonMsg(i int) *message.Message {
	return message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprintf(`{"n":%d}`, i)))
}

// publishN publishes n numbered messages in batches of batch.
func publishN(t *testing.T, pub message.Publisher, topic string, n, batch int) {
	t.Helper()
	for i := 0; i < n; i += batch {
		msgs := make([]*message.Message, 0, batch)
		for j := i; j < min(i+batch, n); j++ {
			msgs = append(msgs, jsonMsg(j))
		}
		require.NoError(t, pub.Publish(topic, msgs...))
	}
}

// receive reads one message or fails the test.
func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		require.True(t, ok, "output channel closed")
		return msg
	case <-time.After(waitTimeout):
		t.Fatal("no message")
		return nil
	}
}

// requireClosed waits until ch is closed, discarding what it still sends.
func requireClosed(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("output channel not closed")
		}
	}
}

// eventually polls cond until it holds, failing after waitTimeout.
func eventually(t *testing.T, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	require.Eventually(t, cond, waitTimeout, 5*time.Millisecond, msgAndArgs...)
}

func subscribe(t *testing.T, sub *redispubsub.Subscriber, topic string) (<-chan *message.Message, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	return ch, cancel
}

// testLogger sends Info and Error logs to t.Log.
func testLogger(t *testing.T) watermill.LoggerAdapter {
	return watermill.NewStdLoggerWithOut(testWriter{t}, false, false)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
