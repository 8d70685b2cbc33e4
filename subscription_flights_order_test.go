package redispubsub

import (
	"maps"
	"slices"
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
	// a2 takes the flight; one message in flight (a2), one waiting (a3):
	// b4 has a slot. a2's flight and the dispatcher hand theirs out in
	// either order.
	got := map[string]*message.Message{}
	for range 2 {
		msg := take(t, out)
		got[string(msg.Payload)] = msg
	}
	require.ElementsMatch(t, []string{`{"n":2}`, `{"n":4}`}, slices.Collect(maps.Keys(got)), "a2, and b4 while a2 is in flight")
	for _, msg := range got {
		msg.Ack()
	}
	require.Equal(t, `{"n":3}`, string(take(t, out).Payload))
}

// A subscription ending with messages waiting for their key's turn: each
// message is counted once as discarded, and the budget holds nothing.
// (Another subscription's unanswered message, the marker, is discarded
// too.)
func TestFlights_EndWithParkedMessages(t *testing.T) {
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) {
		c.MaxInFlight = 2
		c.OrderingKey = func(msg *message.Message) string { return msg.Metadata.Get("k") }
	})
	fc := f.accept()
	p := resp(3)
	out := subscribeOn(t, s, fc, p, "t")
	marker := subscribeOn(t, s, fc, p, "marker")
	for i, key := range []string{"a", "a", "a", "b", "b"} {
		fc.send(p.message("t", keyed(i+1, key)))
	}
	take(t, out) // a1; a2 and a3 wait for it, b4 and b5 stay queued
	// The connection reads in order: once the marker arrived, the five
	// were routed (Received counts a message before it is).
	// It stays unanswered, as a1 does: six messages end unanswered.
	fc.send(p.message("marker", keyed(6, "m")))
	take(t, marker)
	require.NoError(t, s.Close())
	for range out {
	}
	st := s.Stats()
	require.Zero(t, st.BufferedBytes)
	require.EqualValues(t, 6, st.Discarded, "%+v", st)
}
