package redispubsub

// Regression tests of bugs a review of the rewritten Subscriber found; each
// failed on the code as reviewed (the comments describe the bug).

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// closeWithin closes sub and fails the test when Close does not return
// within d.
func closeWithin(t *testing.T, sub *Subscriber, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		_ = sub.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal("Subscriber.Close hangs")
	}
}

// A subscription made by SubscribeInitialize that Redis refuses later (the
// permission was revoked, Redis disconnected the client, the resubscription
// was refused) stays in s.initialized, ended but with no failure (ready was
// closed when it first started). The next Subscribe of the topic takes it
// over: it returns no error for a refused topic, its channel never closes,
// and Close waits for ever for the subscription to finish.
func TestRefusedHeldSubscriptionNeitherSucceedsNorHangsClose(t *testing.T) {
	srv := redistest.Start(t)
	reconnected := make(chan ReconnectEvent, 4)
	sub, err := NewSubscriber(SubscriberConfig{
		Client:      srv.NewClient(t),
		OnReconnect: func(ev ReconnectEvent) { reconnected <- ev },
	}, nil)
	require.NoError(t, err)
	closed := false
	t.Cleanup(func() {
		if !closed {
			closeWithin(t, sub, 5*time.Second)
		}
	})

	require.NoError(t, sub.SubscribeInitialize("guarded"))
	// Redis disconnects a client subscribed to a channel it may no longer
	// use; the resubscription is refused.
	srv.Do(t, "ACL", "SETUSER", "default", "resetchannels", "&open")
	select {
	case ev := <-reconnected:
		require.Equal(t, 1, ev.Refused)
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect")
	}

	ch, err := sub.Subscribe(context.Background(), "guarded")
	if err == nil {
		// Refused: the channel must at least close.
		select {
		case _, ok := <-ch:
			require.False(t, ok)
		case <-time.After(2 * time.Second):
			t.Error("Subscribe of a refused topic succeeded and its channel never closes")
		}
	} else {
		require.ErrorIs(t, err, ErrSubscriptionRefused)
	}
	closed = true
	closeWithin(t, sub, 5*time.Second)
}

// When Redis refuses a multi-channel SUBSCRIBE (here the resubscription
// after a reconnect, one of whose channels the ACL now refuses), every
// channel of it is sent again, alone. A Subscribe that joined one of those
// channels while the refused command was in flight waits for the PONG of a
// PING written after it; that PONG comes right after the error, before the
// channel's new SUBSCRIBE is even written. So Subscribe returns while Redis
// has not subscribed the channel, and a message published right after it
// returns is lost.
func TestJoinerOfARefusedBatchStartsAtItsOwnConfirmation(t *testing.T) {
	srv := redistest.Start(t)
	pub, err := NewPublisher(PublisherConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := NewSubscriber(SubscriberConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { closeWithin(t, sub, 10*time.Second) })

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

// takeInitialized (and SubscribeInitialize) read sn.failure after await
// returned because the caller's context ended, without the connection's mu
// and without having received from ready: the reader goroutine may write it
// (fail, under c.mu) at the same time. Here the Subscribe gives up while the
// connection is down; the resubscription is then refused, which writes
// failure.
func TestFailureIsReadWithoutARace(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do(t, "ACL", "SETUSER", "default", "resetchannels", "&warm")
	proxy := redistest.NewProxy(t, srv.Addr())
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	sub, err := NewSubscriber(SubscriberConfig{
		Client:              client,
		ReconnectBackoffMin: time.Second, ReconnectBackoffMax: time.Second,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { closeWithin(t, sub, 10*time.Second) })
	_, err = sub.Subscribe(context.Background(), "warm") // the connection is up
	require.NoError(t, err)

	proxy.CloseConnections() // reconnects in about a second
	require.Eventually(t, func() bool {
		c := sub.conns[""]
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.sess == nil
	}, 5*time.Second, time.Millisecond)
	initialized := make(chan error, 1)
	go func() { initialized <- sub.SubscribeInitialize("denied") }()
	require.Eventually(t, func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return sub.initialized["denied"] != nil
	}, 5*time.Second, time.Millisecond)
	subscribed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := sub.Subscribe(ctx, "denied") // reads sn.failure once ctx ended
		subscribed <- err
	}()
	require.Error(t, testutil.Wait(t, subscribed, "the Subscribe whose context ends"))
	select {
	case err := <-initialized: // fail wrote sn.failure
		require.ErrorIs(t, err, ErrSubscriptionRefused)
	case <-time.After(15 * time.Second):
		t.Fatal("SubscribeInitialize did not return")
	}
}

// In sharded mode a node connection is to close once it carries no channel
// (connection.go's state diagram; connectionIdle). remove calls
// connectionIdle right after queueing the UNSUBSCRIBE, when the connection
// is not empty yet (pending holds the UNSUBSCRIBE), and nothing calls it
// once the UNSUBSCRIBE is confirmed: the connection, its two goroutines and
// its health-check PINGs stay for good.
func TestIdleNodeConnectionCloses(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	sub, err := NewSubscriber(SubscriberConfig{Client: cluster.NewClient(t), Sharded: true}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { closeWithin(t, sub, 10*time.Second) })
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, "orders")
	require.NoError(t, err)
	cancel()
	testutil.RequireClosed(t, ch)
	testutil.Eventually(t, func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return len(sub.conns) == 0
	}, "the idle node connection was not closed")
}
