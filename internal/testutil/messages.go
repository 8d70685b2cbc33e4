package testutil

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Messages returns n messages with fresh UUIDs and the given payload.
func Messages(n int, payload string) message.Messages {
	msgs := make(message.Messages, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(payload))
	}
	return msgs
}

// Subscribe subscribes sub to topic with a context cancelled at the end of
// the test, failing the test on an error, and returns the channel and the
// context's cancel func.
func Subscribe(t testing.TB, sub message.Subscriber, topic string) (<-chan *message.Message, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe to %q: %v", topic, err)
	}
	return ch, cancel
}
