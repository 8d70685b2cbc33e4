package tests

// Helpers of the universal, router and CQRS tests. Their names start with
// "wm" so that other files of the package can add helpers of their own; the
// helpers every test package shares are in internal/testutil.

import (
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// wmPubSub returns a Publisher and a Subscriber on srv, each with its own
// client, closed at the end of the test. configure, when not nil, adjusts
// the Subscriber's config (Client is already set).
func wmPubSub(t testing.TB, srv *redistest.Server, configure func(*redispubsub.SubscriberConfig)) (*redispubsub.Publisher, *redispubsub.Subscriber) {
	t.Helper()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub, wmSubscriber(t, srv, configure)
}

// wmSubscriber returns a Subscriber on srv with its own client (or the one
// configure sets, when srv is nil), closed at the end of the test.
func wmSubscriber(t testing.TB, srv *redistest.Server, configure func(*redispubsub.SubscriberConfig)) *redispubsub.Subscriber {
	t.Helper()
	var config redispubsub.SubscriberConfig
	if srv != nil {
		config.Client = srv.NewClient(t)
	}
	if configure != nil {
		configure(&config)
	}
	sub, err := redispubsub.NewSubscriber(config, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// wmNewClient returns a go-redis client of srv for code that runs outside
// the test goroutine; the caller closes it.
func wmNewClient(srv *redistest.Server) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: srv.Addr()})
}
