package redispubsub

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// gateHook holds the first pipeline (or single command: the Publisher sends
// one message without a pipeline) of a client until release is closed, and
// records the size of every pipeline.
type gateHook struct {
	entered, release chan struct{}
	once             sync.Once
	mu               sync.Mutex
	sizes            []int
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.pass(1)
		return next(ctx, cmd)
	}
}
func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pass(len(cmds))
		return next(ctx, cmds)
	}
}

func (h *gateHook) pass(size int) {
	h.mu.Lock()
	h.sizes = append(h.sizes, size)
	h.mu.Unlock()
	h.once.Do(func() {
		close(h.entered)
		<-h.release
	})
}

// A refused channel's call and allowed calls coalesced into one pipeline:
// the refused call fails with ErrPublishRefused and publishes nothing, the
// others are published.
func TestPublishRefusedCallLeavesTheOtherCallsOfItsPipeline(t *testing.T) {
	const bound = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	srv := redistest.Start(t)
	srv.Do(t, "ACL", "SETUSER", "app", "on", ">pw", "resetchannels", "&myapp:events:*", "+publish", "+ping")
	watcher := srv.NewClient(t) // the default user: every channel
	ps := watcher.Subscribe(ctx, "refused:x", "myapp:events:first", "myapp:events:a", "myapp:events:b", "myapp:events:end")
	defer ps.Close()
	for range 5 {
		_, err := ps.Receive(ctx) // the confirmations
		require.NoError(t, err)
	}
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "app", Password: "pw"})
	defer client.Close()
	require.NoError(t, client.Ping(ctx).Err()) // connected before the gate
	gate := &gateHook{entered: make(chan struct{}), release: make(chan struct{})}
	client.AddHook(gate)
	pub, err := NewPublisher(PublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	defer pub.Close()
	release := sync.OnceFunc(func() { close(gate.release) })
	defer release() // before Close, also when the test fails half way

	msg := func() *message.Message { return message.NewMessage(watermill.NewUUID(), []byte(`{}`)) }
	results := make(map[string]chan error)
	publish := func(topic string, msgs ...*message.Message) {
		result := make(chan error, 1)
		results[topic] = result
		go func() { result <- pub.Publish(topic, msgs...) }()
	}
	publish("myapp:events:first", msg())
	select {
	case <-gate.entered:
	case <-ctx.Done():
		t.Fatal("the first pipeline was not sent")
	}
	publish("refused:x", msg(), msg(), msg())
	publish("myapp:events:a", msg())
	publish("myapp:events:b", msg())
	testutil.Eventually(t, func() bool { return pub.queued() == 3 }, "the three calls wait behind the first pipeline")
	release()

	for topic, result := range results {
		select {
		case err := <-result:
			if topic == "refused:x" {
				require.ErrorIs(t, err, ErrPublishRefused)
				require.ErrorContains(t, err, `"refused:x"`)
			} else {
				require.NoError(t, err, topic)
			}
		case <-ctx.Done():
			t.Fatalf("Publish to %s did not return", topic)
		}
	}
	gate.mu.Lock()
	require.Equal(t, []int{1, 5}, gate.sizes, "the three calls went in one pipeline")
	gate.mu.Unlock()
	require.Equal(t, PublisherStats{Published: 3, Failed: 3}, pub.Stats())

	require.NoError(t, pub.Publish("myapp:events:end", msg()))
	var got []string
	for len(got) == 0 || got[len(got)-1] != "myapp:events:end" {
		m, err := ps.ReceiveMessage(ctx)
		require.NoError(t, err)
		got = append(got, m.Channel)
	}
	require.ElementsMatch(t, []string{"myapp:events:first", "myapp:events:a", "myapp:events:b", "myapp:events:end"}, got,
		"no message of the refused call")
}
