package redispubsub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

// keyed is the body of an envelope whose metadata k is key, and payload
// {"n":n}.
func keyed(n int, key string) string {
	return fmt.Sprintf(`{"type":"t","payload":{"n":%d},"metadata":{"k":%q}}`, n, key)
}

func take(t *testing.T, out <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg := <-out:
		return msg
	case <-timeout():
		t.Fatal("no message")
		return nil
	}
}

// With MaxInFlight 3 and an ordering key: three messages of different keys
// are out at once; a key's next message comes after its previous one's
// Ack, before anything else takes the slot; a Nacked message comes again
// before the next of its key; a freed slot takes the next queued message.
func TestFlights_MaxInFlightWithOrderingKey(t *testing.T) {
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) {
		c.MaxInFlight = 3
		c.OrderingKey = func(msg *message.Message) string { return msg.Metadata.Get("k") }
		c.NackResendSleep = -1
	})
	fc := f.accept()
	p := resp(3)
	out := subscribeOn(t, s, fc, p, "t")
	for i, key := range []string{"a", "a", "b", "c", "d"} {
		fc.send(p.message("t", keyed(i+1, key)))
	}
	got := map[string]*message.Message{}
	for range 3 {
		msg := take(t, out)
		got[string(msg.Payload)] = msg
	}
	require.Contains(t, got, `{"n":1}`)
	require.Contains(t, got, `{"n":3}`)
	require.Contains(t, got, `{"n":4}`)

	got[`{"n":1}`].Ack()
	second := take(t, out)
	require.Equal(t, `{"n":2}`, string(second.Payload), "key a's next, in the slot a freed")

	got[`{"n":3}`].Nack()
	again := take(t, out)
	require.Equal(t, `{"n":3}`, string(again.Payload), "the Nacked message again")
	again.Ack()
	require.Equal(t, `{"n":5}`, string(take(t, out).Payload), "the slot b freed")
	require.EqualValues(t, 1, s.Stats().Nacked)
}

// Without a key, up to MaxInFlight messages are out at once, and a
// subscription ending with messages in flight ends their contexts, closes
// its channel and leaves nothing behind (newFakeSubscriber checks the
// goroutines).
func TestFlights_EndWithMessagesInFlight(t *testing.T) {
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) { c.MaxInFlight = 4 })
	fc := f.accept()
	p := resp(2)
	out := subscribeOn(t, s, fc, p, "t")
	for i := range 6 {
		fc.send(p.message("t", envelope("t", i)))
	}
	var held []*message.Message
	for range 4 {
		held = append(held, take(t, out))
	}
	require.NoError(t, s.Close())
	for _, msg := range held {
		select {
		case <-msg.Context().Done():
		case <-timeout():
			t.Fatal("a message in flight kept its context")
		}
	}
	for range out {
	}
	require.Zero(t, s.Stats().BufferedBytes)
}

func timeout() <-chan time.Time { return time.After(5 * time.Second) }

// A message of another key goes out as soon as fewer than MaxInFlight
// messages wait for their key's turn: when a flight takes the next message
// of its key, the dispatcher, which stopped at MaxInFlight waiting
// messages, must take the queue up again, not wait until that key's last
// message is answered.
func TestFlights_WaitingMessageTakenFreesTheDispatcher(t *testing.T) {
	keyed3 := make(chan struct{})
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) {
		c.MaxInFlight = 2
		c.OrderingKey = func(msg *message.Message) string {
			if string(msg.Payload) == `{"n":3}` {
				close(keyed3) // the dispatcher is about to have 2 messages wait for key a
			}
			return msg.Metadata.Get("k")
		}
	})
	fc := f.accept()
	p := resp(3)
	out := subscribeOn(t, s, fc, p, "t")
	for i, key := range []string{"a", "a", "a", "b"} {
		fc.send(p.message("t", keyed(i+1, key)))
	}
	first := take(t, out)
	require.Equal(t, `{"n":1}`, string(first.Payload))
	select {
	case <-keyed3:
	case <-timeout():
		t.Fatal("the third message was not keyed")
	}

	first.Ack() // a's second message takes the flight: one message waits
	got := map[string]bool{}
	for range 2 {
		got[string(take(t, out).Payload)] = true
	}
	require.Equal(t, map[string]bool{`{"n":2}`: true, `{"n":4}`: true}, got,
		"key a's next message, and b's beside it while a's second is unanswered")
}

// The EventTarget's listeners of a topic stay one after another whatever
// MaxInFlight says: a handler subscription hands out the next message after
// the previous one's Ack.
func TestFlights_HandlerStaysOneAtATime(t *testing.T) {
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) { c.MaxInFlight = 8 })
	fc := f.accept()
	p := resp(3)
	handled := make(chan *message.Message, 8)
	done := make(chan error, 1)
	go func() {
		done <- s.subscribeHandler(context.Background(), "t", func(msg *message.Message) { handled <- msg }, func() {})
	}()
	fc.expect("SUBSCRIBE", "t")
	fc.send(p.confirm("subscribe", "t", 1))
	require.NoError(t, <-done)
	for i := range 3 {
		fc.send(p.message("t", envelope("t", i)))
	}
	first := take(t, handled)
	select {
	case msg := <-handled:
		t.Fatalf("a second message %s before the first one's Ack", msg.Payload)
	case <-time.After(50 * time.Millisecond): // nothing may come: no event to wait for
	}
	first.Ack()
	require.Equal(t, `{"n":1}`, string(take(t, handled).Payload))
}
