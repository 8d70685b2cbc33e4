package redispubsub_test

import (
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

type fixture struct {
	srv *redistest.Server
	pub *redispubsub.Publisher
	sub *redispubsub.Subscriber
}

// newFixture starts a server and a Publisher and a Subscriber on it, closed
// at the end of the test. configure may adjust the Subscriber's config.
func newFixture(t *testing.T, configure func(*redispubsub.SubscriberConfig), serverArgs ...string) *fixture {
	t.Helper()
	srv := redistest.Start(t, serverArgs...)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	subConfig := redispubsub.SubscriberConfig{Client: srv.NewClient(t)}
	if configure != nil {
		configure(&subConfig)
	}
	sub, err := redispubsub.NewSubscriber(subConfig, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, sub.Close())
		require.NoError(t, pub.Close())
	})
	return &fixture{srv: srv, pub: pub, sub: sub}
}

func jsonMsg(i int) *message.Message {
	return message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprintf(`{"n":%d}`, i)))
}

// jsonMsgs returns the messages jsonMsg(from) to jsonMsg(to-1).
func jsonMsgs(from, to int) []*message.Message {
	msgs := make([]*message.Message, 0, to-from)
	for i := from; i < to; i++ {
		msgs = append(msgs, jsonMsg(i))
	}
	return msgs
}

// publishN publishes n numbered messages in batches of batch.
func publishN(t *testing.T, pub message.Publisher, topic string, n, batch int) {
	t.Helper()
	require.NoError(t, publishNErr(pub, topic, n, batch))
}

// publishNErr is publishN for a goroutine other than the test's: it returns
// the first error.
func publishNErr(pub message.Publisher, topic string, n, batch int) error {
	for i := 0; i < n; i += batch {
		if err := pub.Publish(topic, jsonMsgs(i, min(i+batch, n))...); err != nil {
			return err
		}
	}
	return nil
}
