package redispubsub

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

// A message handed over directly (the consumer waits on the channel) and
// Nacked comes again, a fresh copy with a live context, before the message
// that arrived after it; the first attempt's context ended.
func TestDirect_NackRedeliversBeforeTheNext(t *testing.T) {
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) { c.NackResendSleep = -1 })
	fc := f.accept()
	p := resp(3)
	out := subscribeOn(t, s, fc, p, "a")
	got := make(chan *message.Message)
	go func() {
		for msg := range out {
			got <- msg
		}
		close(got)
	}()
	// Not synchronisation: the assertions hold whichever way the message
	// goes; the wait makes the direct hand-off (a consumer already waiting
	// on the channel) the likely one.
	time.Sleep(10 * time.Millisecond)
	fc.send(p.message("a", envelope("a", 1)))
	first := <-got
	fc.send(p.message("a", envelope("a", 2)))
	first.Nack()
	again := <-got
	require.Equal(t, `{"n":1}`, string(again.Payload))
	require.NotSame(t, first, again)
	require.Error(t, first.Context().Err())
	require.NoError(t, again.Context().Err())
	again.Ack()
	next := <-got
	require.Equal(t, `{"n":2}`, string(next.Payload))
	next.Ack()
	require.EqualValues(t, 1, s.Stats().Nacked)
	require.Eventually(t, func() bool { return s.Stats().Acked == 2 }, 5*time.Second, time.Millisecond)
}

// Two subscriptions of one topic, both waiting: each gets its own copy.
func TestDirect_SharedCopies(t *testing.T) {
	s, f := newFakeSubscriber(t, nil)
	fc := f.accept()
	p := resp(2)
	a := subscribeOn(t, s, fc, p, "a")
	done := subscribeAsync(context.Background(), s, "a")
	fc.expect("PING")
	fc.send(p.pong())
	b := subscribed(t, done)
	ga, gb := make(chan *message.Message, 1), make(chan *message.Message, 1)
	go func() { ga <- <-a }()
	go func() { gb <- <-b }()
	time.Sleep(10 * time.Millisecond) // makes the direct hand-off likely, as above
	fc.send(p.message("a", envelope("a", 1)))
	ma, mb := <-ga, <-gb
	require.NotSame(t, ma, mb)
	ma.Ack()
	require.NoError(t, mb.Context().Err(), "b's copy is not acked by a's Ack")
	mb.Ack()
}

// A message handed over directly whose subscription's context ends before
// its Ack: its context ends and the channel closes.
func TestDirect_EndBeforeAck(t *testing.T) {
	s, f := newFakeSubscriber(t, nil)
	fc := f.accept()
	p := resp(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := subscribeAsync(ctx, s, "a")
	fc.expect("SUBSCRIBE", "a")
	fc.send(p.confirm("subscribe", "a", 1))
	out := subscribed(t, done)
	got := make(chan *message.Message)
	go func() { got <- <-out }()
	time.Sleep(10 * time.Millisecond) // makes the direct hand-off likely, as above
	fc.send(p.message("a", envelope("a", 1)))
	msg := <-got
	cancel()
	select {
	case <-msg.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the message's context did not end")
	}
	_, open := <-out
	require.False(t, open)
	require.EqualValues(t, 1, s.Stats().Discarded)
}
