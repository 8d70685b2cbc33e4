package redispubsub

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

// The dispatcher stops taking messages while MaxInFlight messages wait for
// their key's turn. When a flight takes the next message of its key, one
// fewer waits: the dispatcher must wake up and hand out the next queued
// message of another key in the slot that is free, not wait until the whole
// chain of the busy key ran out.
func TestFlights_ParkedMessageTakenWakesTheDispatcher(t *testing.T) {
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) {
		c.MaxInFlight = 2
		c.OrderingKey = func(msg *message.Message) string { return msg.Metadata.Get("k") }
	})
	fc := f.accept()
	p := resp(3)
	out := subscribeOn(t, s, fc, p, "t")
	for i, key := range []string{"a", "a", "a", "b"} {
		fc.send(p.message("t", keyed(i+1, key)))
	}
	a1 := take(t, out)
	require.Equal(t, `{"n":1}`, string(a1.Payload))
	// a2 and a3 wait for a1: two wait, so b4 stays queued for now.
	a1.Ack()
	a2 := take(t, out)
	require.Equal(t, `{"n":2}`, string(a2.Payload))
	// One message in flight (a2), one waiting (a3): b4 has a slot.
	b4 := take(t, out)
	require.Equal(t, `{"n":4}`, string(b4.Payload), "b4 while a2 is in flight")
	a2.Ack()
	b4.Ack()
	require.Equal(t, `{"n":3}`, string(take(t, out).Payload))
}

// A subscription ending with messages waiting for their key's turn: each
// message is counted once as discarded, and the budget holds nothing.
func TestFlights_EndWithParkedMessages(t *testing.T) {
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) {
		c.MaxInFlight = 2
		c.OrderingKey = func(msg *message.Message) string { return msg.Metadata.Get("k") }
	})
	fc := f.accept()
	p := resp(3)
	out := subscribeOn(t, s, fc, p, "t")
	for i, key := range []string{"a", "a", "a", "b", "b"} {
		fc.send(p.message("t", keyed(i+1, key)))
	}
	take(t, out) // a1; a2 and a3 wait for it, b4 and b5 stay queued
	waitFor(t, func() bool { return s.Stats().Received == 5 })
	require.NoError(t, s.Close())
	for range out {
	}
	st := s.Stats()
	require.Zero(t, st.BufferedBytes)
	require.EqualValues(t, 5, st.Discarded, "%+v", st)
}
