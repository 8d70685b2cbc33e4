package bench

import (
	"context"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// BenchmarkHandoff is the hand-off alone, without the bench's flow
// control: messages per second = 1e9 / ns/op.
func BenchmarkHandoff(b *testing.B) {
	h := newHandoff()
	defer func() { _ = h.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := h.Subscribe(ctx, "t")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for msg := range ch {
			msg.Ack()
		}
	}()
	body := payload(256)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		msg := message.NewMessage(strconv.Itoa(i), body)
		if err := h.Publish("t", msg); err != nil {
			b.Fatal(err)
		}
	}
	cancel()
	<-done
}

// TestHandoff: Publish hands each message over and returns only after its
// Ack, in a context of the subscription's that ends after it; without a
// subscription it drops; one subscription per topic; the end of the
// subscription or Close ends a waiting Publish and closes the channel.
func TestHandoff(t *testing.T) {
	h := newHandoff()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	require.NoError(t, h.Publish("t", message.NewMessage("dropped", nil)), "nobody subscribed")
	ch, err := h.Subscribe(ctx, "t")
	require.NoError(t, err)
	_, err = h.Subscribe(ctx, "t")
	require.ErrorIs(t, err, errHandoffSubscribed)

	published := make(chan error, 1)
	go func() {
		published <- h.Publish("t", message.NewMessage("1", []byte("a")), message.NewMessage("2", []byte("b")))
	}()
	for _, want := range []string{"1", "2"} {
		msg := testutil.Receive(t, ch)
		assert.Equal(t, want, msg.UUID)
		select {
		case err := <-published:
			t.Fatalf("Publish returned before the Ack of %s: %v", want, err)
		default:
		}
		require.NoError(t, msg.Context().Err())
		msg.Ack()
		testutil.Eventually(t, func() bool { return msg.Context().Err() != nil }, "the message's context ends after its Ack")
	}
	require.NoError(t, testutil.Wait(t, published, "Publish"))

	// The subscription ends while a Publish waits for the consumer.
	go func() { published <- h.Publish("t", message.NewMessage("3", nil)) }()
	msg := testutil.Receive(t, ch)
	cancel()
	require.ErrorIs(t, testutil.Wait(t, published, "Publish"), errHandoffEnded)
	assert.Error(t, msg.Context().Err(), "the message's context derives from the subscription's")
	testutil.RequireClosed(t, ch)

	// Close ends the subscriptions, a waiting Publish, and further use.
	ch, err = h.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	go func() { published <- h.Publish("t", message.NewMessage("4", nil)) }()
	testutil.Receive(t, ch)
	require.NoError(t, h.Close())
	require.ErrorIs(t, testutil.Wait(t, published, "Publish"), errHandoffEnded)
	testutil.RequireClosed(t, ch)
	require.ErrorIs(t, h.Publish("t", message.NewMessage("5", nil)), errHandoffClosed)
	_, err = h.Subscribe(context.Background(), "t")
	require.ErrorIs(t, err, errHandoffClosed)
	require.NoError(t, h.Close(), "idempotent")
}
