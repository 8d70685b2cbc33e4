package redispubsub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// Unit tests of the connection: a Subscriber on a fake socket (fakeredis_test.go),
// every reply order and fault driven by the test, no server; beside them, a
// test on a real redis-server where Redis's own timing is the point.

type subscribeResult struct {
	out <-chan *message.Message
	err error
}

// subscribeAsync calls Subscribe with ctx on a goroutine of its own: it
// returns only once the fake confirmed.
func subscribeAsync(ctx context.Context, s *Subscriber, topic string) <-chan subscribeResult {
	done := make(chan subscribeResult, 1)
	go func() {
		out, err := s.Subscribe(ctx, topic)
		done <- subscribeResult{out, err}
	}()
	return done
}

func subscribed(t *testing.T, done <-chan subscribeResult) <-chan *message.Message {
	t.Helper()
	select {
	case r := <-done:
		require.NoError(t, r.err)
		return r.out
	case <-time.After(5 * time.Second):
		t.Fatal("Subscribe did not return")
		return nil
	}
}

func notReturned(t *testing.T, done <-chan subscribeResult) {
	t.Helper()
	select {
	case r := <-done:
		t.Fatalf("Subscribe returned before its confirmation: %v", r.err)
	default:
	}
}

// receive takes the next message and Acks it.
func receive(t *testing.T, out <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-out:
		require.True(t, ok, "the output channel was closed")
		msg.Ack()
		return msg
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
		return nil
	}
}

// nothingQueued checks that out holds no message once the connection has
// read everything sent before a later reply that the test waited for.
func nothingQueued(t *testing.T, out <-chan *message.Message) {
	t.Helper()
	select {
	case msg := <-out:
		t.Fatalf("unexpected message %s", msg.Payload)
	default:
	}
}

// subscribeOn subscribes topic on a connection that fc serves.
func subscribeOn(t *testing.T, s *Subscriber, fc *fakeConn, p resp, topic string) <-chan *message.Message {
	t.Helper()
	done := subscribeAsync(context.Background(), s, topic)
	fc.expect("SUBSCRIBE", topic)
	notReturned(t, done)
	fc.send(p.confirm("subscribe", topic, 1))
	return subscribed(t, done)
}

func forBothProtocols(t *testing.T, test func(t *testing.T, p resp)) {
	for _, p := range []resp{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", p), func(t *testing.T) { test(t, p) })
	}
}

func TestConnection_SubscribeReturnsAtItsConfirmation(t *testing.T) {
	forBothProtocols(t, func(t *testing.T, p resp) {
		s, f := newFakeSubscriber(t, nil)
		fc := f.accept()
		out := subscribeOn(t, s, fc, p, "a")
		fc.send(p.message("a", envelope("a", 1)))
		require.Equal(t, `{"n":1}`, string(receive(t, out).Payload))
	})
}

// A second Subscribe of a subscribed channel starts at the answer to a PING
// written after it: what Redis sent before that answer is not its.
func TestConnection_JoinerStartsAtThePong(t *testing.T) {
	forBothProtocols(t, func(t *testing.T, p resp) {
		s, f := newFakeSubscriber(t, nil)
		fc := f.accept()
		first := subscribeOn(t, s, fc, p, "a")
		done := subscribeAsync(context.Background(), s, "a")
		fc.expect("PING")
		fc.send(p.message("a", envelope("a", 1)))
		notReturned(t, done)
		fc.send(p.pong())
		second := subscribed(t, done)
		fc.send(p.message("a", envelope("a", 2)))
		require.Equal(t, `{"n":1}`, string(receive(t, first).Payload))
		require.Equal(t, `{"n":2}`, string(receive(t, first).Payload))
		require.Equal(t, `{"n":2}`, string(receive(t, second).Payload))
		nothingQueued(t, second)
	})
}

// An ACL that refuses PING (no +ping) answers it with an error: that answer
// orders the replies as a PONG does, and the connection goes on.
func TestConnection_ErrorReplyToPingIsItsAnswer(t *testing.T) {
	s, f := newFakeSubscriber(t, nil)
	fc := f.accept()
	p := resp(3)
	first := subscribeOn(t, s, fc, p, "a")
	done := subscribeAsync(context.Background(), s, "a")
	fc.expect("PING")
	fc.send("-NOPERM User u has no permissions to run the 'ping' command\r\n")
	second := subscribed(t, done)
	fc.send(p.message("a", envelope("a", 1)))
	receive(t, first)
	receive(t, second)
	require.Zero(t, s.Stats().Reconnects)
}

// Redis refuses a whole SUBSCRIBE for one channel: the channels are sent
// again one at a time, and only the refused one fails.
func TestConnection_RefusedBatchIsSentAgainAlone(t *testing.T) {
	forBothProtocols(t, func(t *testing.T, p resp) {
		s, f := newFakeSubscriber(t, nil)
		// Both Subscribes wait for the connection: they go in one
		// SUBSCRIBE.
		a, b := subscribeAsync(context.Background(), s, "a"), subscribeAsync(context.Background(), s, "b")
		waitFor(t, func() bool {
			c := s.conns[""]
			c.mu.Lock()
			defer c.mu.Unlock()
			return len(c.channels) == 2
		})
		fc := f.accept()
		fc.expect("SUBSCRIBE", "a", "b")
		fc.send("-NOPERM this user has no permissions to access the 'b' channel\r\n")
		fc.expect("SUBSCRIBE", "a")
		fc.expect("SUBSCRIBE", "b")
		fc.send(p.confirm("subscribe", "a", 1))
		fc.send("-NOPERM this user has no permissions to access the 'b' channel\r\n")
		out := subscribed(t, a)
		select {
		case r := <-b:
			require.ErrorIs(t, r.err, ErrSubscriptionRefused)
			require.ErrorContains(t, r.err, "NOPERM")
		case <-time.After(5 * time.Second):
			t.Fatal("the refused Subscribe did not return")
		}
		fc.send(p.message("a", envelope("a", 1)))
		receive(t, out)
	})
}

// When Redis refuses a multi-channel SUBSCRIBE (here the resubscription
// after a reconnect, one of whose channels the ACL now refuses), every
// channel of it is sent again, alone. A Subscribe that joined one of those
// channels while the refused command was in flight returns once Redis
// confirmed the channel's own SUBSCRIBE, so a message published right after
// it returns is delivered (on a real server). (The bug: the joiner waited
// for the PONG of a PING written after it, which came right after the
// error, before the channel's new SUBSCRIBE was even written, and the
// message was lost.)
func TestConnection_JoinerOfARefusedBatchStartsAtItsOwnConfirmation(t *testing.T) {
	srv := redistest.Start(t)
	pub, err := NewPublisher(PublisherConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := NewSubscriber(SubscriberConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = testutil.Close(t, sub, "the Subscriber") })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Long channel names make the resubscription a large command, so that a
	// Subscribe can join between its writing and Redis's error reply, and
	// make the channels' SUBSCRIBEs sent again alone take a while to write.
	pad := strings.Repeat("x", 32<<10)
	for i := range 200 {
		_, err := sub.Subscribe(ctx, fmt.Sprintf("a-%03d-%s", i, pad))
		require.NoError(t, err)
	}
	_, err = sub.Subscribe(ctx, "b-denied")
	require.NoError(t, err)
	_, err = sub.Subscribe(ctx, "z-ok")
	require.NoError(t, err)

	// Redis disconnects the Subscriber (it listens to b-denied); its
	// resubscription is one SUBSCRIBE of 202 channels, refused.
	srv.Do(t, "ACL", "SETUSER", "default", "resetchannels", "&a-*", "&z-ok")
	c := sub.conns[""]
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		inFlight := false
		if c.sess != nil {
			for _, cmd := range c.sess.sent {
				inFlight = inFlight || (cmd.kind == cmdSubscribe && len(cmd.names) > 1)
			}
		}
		c.mu.Unlock()
		if inFlight {
			break
		}
		require.True(t, time.Now().Before(deadline), "the resubscription was never written")
	}
	joined, err := sub.Subscribe(ctx, "z-ok")
	require.NoError(t, err)
	// Subscribe returned: Redis confirmed the subscription, so says the
	// contract.
	numsub := srv.Do(t, "PUBSUB", "NUMSUB", "z-ok").([]any)[1].(int64)
	require.NoError(t, pub.Publish("z-ok", message.NewMessage(watermill.NewUUID(), []byte(`{"marker":true}`))))
	select {
	case msg := <-joined:
		msg.Ack()
	case <-time.After(5 * time.Second):
		t.Fatalf("the message published after Subscribe returned was lost (PUBSUB NUMSUB z-ok was %d when Subscribe returned)", numsub)
	}
}

// A reply to a command that was never sent means the stream is not what
// the connection thinks: it starts over, with one new socket and one
// resubscription.
func TestConnection_ReplyToACommandNeverSentReconnects(t *testing.T) {
	reconnected := make(chan ReconnectEvent, 1)
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) {
		c.OnReconnect = func(ev ReconnectEvent) { reconnected <- ev }
	})
	fc := f.accept()
	p := resp(2)
	out := subscribeOn(t, s, fc, p, "a")
	fc.send(p.confirm("subscribe", "never-sent", 2))
	fc.closed()
	fc2 := f.accept()
	fc2.expect("SUBSCRIBE", "a")
	fc2.send(p.confirm("subscribe", "a", 1))
	select {
	case ev := <-reconnected:
		require.ErrorIs(t, ev.Cause, errUnexpectedReply)
		require.Equal(t, 1, ev.Topics)
	case <-time.After(5 * time.Second):
		t.Fatal("no OnReconnect")
	}
	fc2.send(p.message("a", envelope("a", 1)))
	require.Equal(t, `{"n":1}`, string(receive(t, out).Payload))
	require.EqualValues(t, 1, s.Stats().Reconnects)
}

// A reply may arrive in any pieces: one byte per read, or several replies in
// one.
func TestConnection_RepliesSplitAndJoinedAcrossReads(t *testing.T) {
	forBothProtocols(t, func(t *testing.T, p resp) {
		s, f := newFakeSubscriber(t, nil)
		fc := f.accept()
		out := subscribeOn(t, s, fc, p, "a")
		msg := p.message("a", envelope("a", 1))
		for i := range len(msg) {
			fc.send(msg[i : i+1])
		}
		fc.send(p.message("a", envelope("a", 2)) + p.pmessage("unknown*", "x", "{}") + p.message("a", envelope("a", 3)))
		for n := 1; n <= 3; n++ {
			require.Equal(t, fmt.Sprintf(`{"n":%d}`, n), string(receive(t, out).Payload))
		}
	})
}

// A socket reset in the middle of a message: nothing of it is delivered,
// and the connection comes back resubscribed.
func TestConnection_ResetMidReply(t *testing.T) {
	s, f := newFakeSubscriber(t, nil)
	fc := f.accept()
	p := resp(3)
	out := subscribeOn(t, s, fc, p, "a")
	msg := p.message("a", envelope("a", 1))
	fc.send(msg[:len(msg)/2])
	_ = fc.conn.Close()
	fc2 := f.accept()
	fc2.expect("SUBSCRIBE", "a")
	fc2.send(p.confirm("subscribe", "a", 1))
	fc2.send(p.message("a", envelope("a", 2)))
	require.Equal(t, `{"n":2}`, string(receive(t, out).Payload))
	nothingQueued(t, out)
}

// A body longer than MaxMessageBytes is skipped as it is read, never held,
// and counted; the stream goes on.
func TestConnection_OversizedBodySkipped(t *testing.T) {
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) { c.MaxMessageBytes = 64 })
	fc := f.accept()
	p := resp(2)
	out := subscribeOn(t, s, fc, p, "a")
	fc.send(p.message("a", strings.Repeat("x", 1<<20)) + p.message("a", envelope("a", 2)))
	require.Equal(t, `{"n":2}`, string(receive(t, out).Payload))
	require.EqualValues(t, 1, s.Stats().Oversized)
}

// Pushes of other kinds (client tracking, maintenance) are skipped.
func TestConnection_OtherPushesIgnored(t *testing.T) {
	s, f := newFakeSubscriber(t, nil)
	fc := f.accept()
	p := resp(3)
	out := subscribeOn(t, s, fc, p, "a")
	fc.send(">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nkey\r\n" + "|1\r\n+ttl\r\n:3\r\n" + p.message("a", envelope("a", 1)))
	receive(t, out)
	require.Zero(t, s.Stats().Reconnects)
}

// A socket that stops answering is dropped after a whole health-check
// interval of silence, not sooner; a PING is written in the meantime.
func TestConnection_SilentSocketDroppedAfterTheWholeInterval(t *testing.T) {
	const interval = 400 * time.Millisecond
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) { c.HealthCheckInterval = interval })
	fc := f.accept()
	p := resp(3)
	subscribeOn(t, s, fc, p, "a")
	lastByte := time.Now()
	fc.expect("PING")
	fc.closed()
	require.GreaterOrEqual(t, time.Since(lastByte), interval, "dropped before a whole interval of silence")
	fc2 := f.accept()
	fc2.expect("SUBSCRIBE", "a")
	fc2.send(p.confirm("subscribe", "a", 1))
	require.Eventually(t, func() bool { return s.Stats().Reconnects == 1 }, 5*time.Second, time.Millisecond)
}

// A reconnect costs one socket and the resubscription of every channel, in
// commands of at most maxNamesPerCommand names.
func TestConnection_ReconnectResubscribesInBatches(t *testing.T) {
	s, f := newFakeSubscriber(t, nil)
	const topics = 2*maxNamesPerCommand + 500
	results := make([]<-chan subscribeResult, topics)
	for i := range results {
		results[i] = subscribeAsync(context.Background(), s, fmt.Sprintf("t%04d", i))
	}
	waitFor(t, func() bool {
		c := s.conns[""]
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.channels) == topics
	})
	p := resp(3)
	serve := func(fc *fakeConn) {
		var names []string
		for _, size := range []int{maxNamesPerCommand, maxNamesPerCommand, 500} {
			cmd := fc.command()
			require.Equal(t, "SUBSCRIBE", cmd[0])
			require.Len(t, cmd[1:], size)
			names = append(names, cmd[1:]...)
		}
		var replies strings.Builder
		for i, name := range names {
			replies.WriteString(p.confirm("subscribe", name, i+1))
		}
		fc.send(replies.String())
	}
	fc := f.accept()
	serve(fc)
	for _, r := range results {
		subscribed(t, r)
	}
	_ = fc.conn.Close()
	serve(f.accept())
	require.Eventually(t, func() bool { return s.Stats().Reconnects == 1 }, 5*time.Second, time.Millisecond)
	select {
	case <-f.conns:
		t.Fatal("a second socket was dialed")
	default:
	}
}

// A pattern's messages carry the concrete topic.
func TestConnection_PatternMessage(t *testing.T) {
	s, f := newFakeSubscriber(t, nil)
	fc := f.accept()
	p := resp(2)
	done := make(chan subscribeResult, 1)
	go func() {
		out, err := s.SubscribePattern(context.Background(), "a:*")
		done <- subscribeResult{out, err}
	}()
	fc.expect("PSUBSCRIBE", "a:*")
	fc.send(p.confirm("psubscribe", "a:*", 1))
	out := subscribed(t, done)
	fc.send(p.pmessage("a:*", "a:1", envelope("a", 1)))
	msg := receive(t, out)
	require.Equal(t, "a:1", msg.Metadata.Get(MetadataTopic))
}

// The last subscription of a channel ending unsubscribes it in Redis, and
// the confirmation is taken as the answer it is.
func TestConnection_LastSubscriptionUnsubscribes(t *testing.T) {
	s, f := newFakeSubscriber(t, nil)
	fc := f.accept()
	p := resp(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := subscribeAsync(ctx, s, "a")
	fc.expect("SUBSCRIBE", "a")
	fc.send(p.confirm("subscribe", "a", 1))
	out := subscribed(t, done)
	cancel()
	fc.expect("UNSUBSCRIBE", "a")
	fc.send(p.confirm("unsubscribe", "a", 0))
	_, open := <-out
	require.False(t, open)
	// Still in step: a new Subscribe is confirmed as usual.
	subscribeOn(t, s, fc, p, "b")
	require.Zero(t, s.Stats().Reconnects)
}

func TestConnection_StateTransitionsAreChecked(t *testing.T) {
	c := &connection{state: stateClosed}
	require.Panics(t, func() { c.setState(stateLive) })
	c.state = stateDialing
	require.Panics(t, func() { c.setState(stateLive) }, "live only after subscribing")
	c.setState(stateSubscribing)
	c.setState(stateLive)
	c.setState(stateBroken)
	c.setState(stateDialing)
	c.setState(stateClosed)
	for st := range transitions {
		require.NotEmpty(t, connState(st).String())
	}
}

// waitFor polls cond, on the test's goroutine, until it holds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(errors.New("condition not met in 5s"))
		}
		time.Sleep(time.Millisecond)
	}
}

// A message handed to an idle consumer from the reader's goroutine is
// Nacked: it comes again, before the next one, as any message does.
func TestConnection_NackOfADirectlyHandedMessage(t *testing.T) {
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) { c.NackResendSleep = -1 })
	fc := f.accept()
	p := resp(3)
	out := subscribeOn(t, s, fc, p, "a")
	fc.send(p.message("a", envelope("a", 1)))
	first := <-out
	fc.send(p.message("a", envelope("a", 2)))
	first.Nack()
	require.Equal(t, `{"n":1}`, string(receive(t, out).Payload))
	require.Equal(t, `{"n":2}`, string(receive(t, out).Payload))
	// The delivery goroutine counts an Ack once it has seen it.
	waitFor(t, func() bool { return s.Stats().Acked == 2 })
	require.EqualValues(t, 1, s.Stats().Nacked)
}
