package redispubsub

// Tests of one subscription's readiness and failure (subscription.go) on a
// real redis-server.

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// A subscription's failure may be written by the reader goroutine (fail,
// when Redis refuses the channel) while a Subscribe that gave up (its
// context ended) reads it: -race sees no race, and SubscribeInitialize gets
// the refusal. Here the Subscribe gives up while the connection is down;
// the resubscription is then refused, which writes failure. (The bug:
// takeInitialized and SubscribeInitialize read sn.failure after await
// returned for the caller's context, without the connection's mu and
// without having received from ready.)
func TestSubscription_FailureIsReadWithoutARaceWhenSubscribeGivesUp(t *testing.T) {
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
	t.Cleanup(func() { _ = testutil.Close(t, sub, "the Subscriber") })
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
	// fail wrote sn.failure
	require.ErrorIs(t, testutil.Wait(t, initialized, "SubscribeInitialize"), ErrSubscriptionRefused)
}
