package tests

// The hooks (OnReconnect, OnGap) and Close: Close waits for the hooks
// called before it, a hook may call Close, a slow hook does not stop the
// reading, and OnReconnect's cause is what ended the connection.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// Close called while OnReconnect runs returns after that hook returned, and
// a gap counted meanwhile, whose OnGap waits behind it, reaches OnGap before
// Close returns. (The bug: Close returned at once, the hook ran on after
// it, and the OnGap queued behind it was never called for a counted gap,
// 5 of 5 trials.)
func TestHookCloseWaitsForTheRunningHookAndTheGapsQueuedBehindIt(t *testing.T) {
	srv := redistest.Start(t)
	started, release := make(chan struct{}), make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	var hookReturned atomic.Bool
	var gapsMu sync.Mutex
	var gapEvents []redispubsub.GapEvent
	pub, sub := wmPubSub(t, srv, func(c *redispubsub.SubscriberConfig) {
		// Slow enough to publish while the Subscriber is away.
		c.ReconnectBackoffMin, c.ReconnectBackoffMax = time.Second, time.Second
		c.OnReconnect = func(redispubsub.ReconnectEvent) {
			close(started)
			<-release
			hookReturned.Store(true)
		}
		c.OnGap = func(ev redispubsub.GapEvent) {
			gapsMu.Lock()
			gapEvents = append(gapEvents, ev)
			gapsMu.Unlock()
		}
	})
	t.Cleanup(releaseOnce) // before the Subscriber's Close, also when the test fails half way
	ch, _ := testutil.Subscribe(t, sub, "hook.gap")
	require.NoError(t, pub.Publish("hook.gap", message.NewMessage("first", []byte(`{}`))))
	msg := testutil.Receive(t, ch)
	require.Equal(t, "first", msg.UUID)
	msg.Ack()

	srv.KillClients(t, "TYPE", "pubsub")
	testutil.Eventually(t, func() bool { return testutil.Numsub(t, srv, "hook.gap") == 0 }, "the subscription is gone")
	require.NoError(t, pub.Publish("hook.gap", testutil.Messages(5, `{"lost":true}`)...))
	testutil.Wait(t, started, "OnReconnect")
	require.NoError(t, pub.Publish("hook.gap", message.NewMessage("after", []byte(`{}`))))
	msg = testutil.Receive(t, ch)
	require.Equal(t, "after", msg.UUID)
	msg.Ack()
	testutil.Eventually(t, func() bool { return sub.Stats().Gaps == 5 }, "the gap counted")

	closed := make(chan bool, 1)
	go func() {
		_ = sub.Close()
		closed <- hookReturned.Load()
	}()
	// Close is under way: the subscription ended, the connection closed.
	// Only the hooks are left to wait for.
	testutil.RequireClosed(t, ch)
	testutil.Eventually(t, func() bool {
		return strings.TrimSpace(srv.Do(t, "CLIENT", "LIST", "TYPE", "pubsub").(string)) == ""
	}, "the Subscriber's connection closed")
	releaseOnce()
	require.True(t, testutil.Wait(t, closed, "Close"), "Close returned while OnReconnect ran")
	gapsMu.Lock()
	defer gapsMu.Unlock()
	require.Len(t, gapEvents, 1, "the counted gap reached OnGap before Close returned")
	require.EqualValues(t, 5, gapEvents[0].Missing())
}

// A hook may call Close also while another Close waits for that hook: the
// hook's Close returns at once, the other once the hook returned.
func TestHookMayCloseWhileCloseWaitsForIt(t *testing.T) {
	srv := redistest.Start(t)
	started, release := make(chan struct{}), make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	hookClosed := make(chan error, 1)
	var sub *redispubsub.Subscriber
	sub = wmSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) {
		c.OnReconnect = func(redispubsub.ReconnectEvent) {
			close(started)
			<-release
			hookClosed <- sub.Close()
		}
	})
	t.Cleanup(releaseOnce)
	ch, _ := testutil.Subscribe(t, sub, "hook.close")
	srv.KillClients(t, "TYPE", "pubsub")
	testutil.Wait(t, started, "OnReconnect")

	closed := make(chan struct{})
	go func() {
		_ = sub.Close()
		close(closed)
	}()
	testutil.RequireClosed(t, ch) // Close is under way
	releaseOnce()
	require.NoError(t, testutil.Wait(t, hookClosed, "the hook's Close"))
	testutil.Wait(t, closed, "Close")
}

// OnReconnect's cause is what ended the connection (the server closed it),
// also when Subscribe calls were writing at that moment. (The bug: "redis:
// client is closed", the error of the Subscriber's own Close of the broken
// connection.)
func TestReconnectCauseIsWhatEndedTheConnection(t *testing.T) {
	srv := redistest.Start(t)
	reconnects := make(chan redispubsub.ReconnectEvent, 64)
	sub := wmSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) {
		c.OnReconnect = func(ev redispubsub.ReconnectEvent) { reconnects <- ev }
	})
	testutil.Subscribe(t, sub, "cause.0")
	for round := range 5 {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), testutil.Timeout)
				defer cancel()
				_, _ = sub.Subscribe(ctx, fmt.Sprintf("cause.%d.%d", round, i))
			}()
		}
		srv.KillClients(t, "TYPE", "pubsub")
		ev := testutil.Wait(t, reconnects, "OnReconnect")
		require.NotContains(t, ev.Cause.Error(), "client is closed")
		testutil.WaitGroup(t, &wg, "the concurrent Subscribes")
	}
}

// A slow hook does not stop the reading: while OnReconnect blocks, messages
// flow; a hook may call Subscribe, and Close.
func TestHooksRunOffTheReadingGoroutine(t *testing.T) {
	srv := redistest.Start(t)
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	hookSubscribed, hookClosed := make(chan error, 1), make(chan error, 1)
	var sub *redispubsub.Subscriber
	pub, sub := wmPubSub(t, srv, func(c *redispubsub.SubscriberConfig) {
		c.OnReconnect = func(redispubsub.ReconnectEvent) {
			<-release
			ctx, cancel := context.WithTimeout(context.Background(), testutil.Timeout)
			defer cancel()
			_, err := sub.Subscribe(ctx, "from-hook")
			hookSubscribed <- err
			hookClosed <- sub.Close()
		}
	})
	t.Cleanup(releaseOnce) // before the Subscriber's Close, also when the test fails half way
	ch, _ := testutil.Subscribe(t, sub, "flow")
	srv.KillClients(t, "TYPE", "pubsub")
	testutil.Eventually(t, func() bool { return sub.Stats().Reconnects == 1 })
	// The hook blocks; the reader goes on.
	for i := range 3 {
		require.NoError(t, pub.Publish("flow", message.NewMessage(fmt.Sprint(i), []byte(`{}`))))
		testutil.Receive(t, ch).Ack()
	}
	releaseOnce()
	require.NoError(t, testutil.Wait(t, hookSubscribed, "the hook's Subscribe"))
	require.NoError(t, testutil.Wait(t, hookClosed, "the hook's Close"))
	testutil.RequireClosed(t, ch) // the hook closed the Subscriber
}
