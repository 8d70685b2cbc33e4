package redispubsub_test

import (
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// On Redis Cluster, PUBLISH reaches subscribers on every node: a Publisher
// and a Subscriber on a ClusterClient work as on one server, whichever nodes
// their connections land on.
func TestClusterPublishSubscribe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cluster := redistest.StartCluster(t, 3)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: cluster.NewClient(t)}, nil)
	require.NoError(t, err)
	defer pub.Close()
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: cluster.NewClient(t)}, testutil.Logger(t))
	require.NoError(t, err)
	defer sub.Close()

	topics := []string{"orders", "users", "call.responded:uuid-1"} // different hash slots
	chans := make(map[string]<-chan *message.Message)
	for _, topic := range topics {
		chans[topic], _ = testutil.Subscribe(t, sub, topic)
	}
	for _, topic := range topics {
		publishN(t, pub, topic, 20, 5)
	}
	for _, topic := range topics {
		for i := range 20 {
			msg := testutil.Receive(t, chans[topic])
			require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i), string(msg.Payload), topic)
			msg.Ack()
		}
	}
	require.Zero(t, sub.Stats().Gaps)
}
