package redispubsub_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// aclAppUser is the least privilege of a service whose channels start with
// "myapp:events:", as the README shows it. go-redis needs nothing more on
// one server (AUTH and HELLO are always allowed); a ClusterClient also needs
// +cluster|slots.
var aclAppUser = []any{"ACL", "SETUSER", "app", "on", ">pw", "resetchannels", "&myapp:events:*",
	"+publish", "+subscribe", "+psubscribe", "+ssubscribe", "+spublish",
	"+unsubscribe", "+punsubscribe", "+sunsubscribe", "+ping"}

// appClient returns a client of srv logged in as the user of aclAppUser.
func appClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	srv.Do(t, aclAppUser...)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "app", Password: "pw"})
	t.Cleanup(func() { _ = client.Close() })
	require.NoError(t, client.Ping(context.Background()).Err())
	return client
}

// A Publish to a channel the ACL refuses fails with ErrPublishRefused,
// naming the channel and Redis's words, and none of its messages is
// published; the channels the ACL allows work on the same Publisher.
func TestPublishRefusedByACL(t *testing.T) {
	for _, sharded := range []bool{false, true} {
		t.Run(map[bool]string{false: "classic", true: "sharded"}[sharded], func(t *testing.T) {
			srv := redistest.Start(t)
			admin := srv.NewClient(t) // the default user: every channel
			var ps *redis.PubSub
			if sharded {
				ps = rawSSubscribe(t, srv.Addr(), "other:events:x", "myapp:events:ok")
			} else {
				ps = rawSubscribe(t, admin, "other:events:x", "myapp:events:ok")
			}
			pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: appClient(t, srv), Sharded: sharded}, nil)
			require.NoError(t, err)
			defer pub.Close()

			err = pub.Publish("other:events:x", jsonMsg(0), jsonMsg(1), jsonMsg(2))
			require.ErrorIs(t, err, redispubsub.ErrPublishRefused)
			require.ErrorContains(t, err, `"other:events:x"`)
			require.ErrorContains(t, err, "NOPERM")
			require.ErrorContains(t, err, "3 of 3 messages")
			require.Equal(t, redispubsub.PublisherStats{Failed: 3}, pub.Stats())

			require.NoError(t, pub.Publish("myapp:events:ok", jsonMsg(3)))
			msg := receiveRaw(t, ps)
			require.Equal(t, "myapp:events:ok", msg.Channel, "nothing of the refused call was published")
			require.Equal(t, 3, rawN(t, msg))
		})
	}
}

// On a cluster the least privilege needs +cluster|slots besides, for
// go-redis's slot map (without +command go-redis logs that it cannot read
// the command table, and works).
func TestShardedPublishWithLeastPrivilegeOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cluster := redistest.StartCluster(t, 3)
	for _, n := range cluster.Nodes() {
		n.Do(t, append(aclAppUser, "+cluster|slots")...)
	}
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), Username: "app", Password: "pw"})
	defer client.Close()
	topic := topicOn(t, cluster, 2, "myapp:events:")
	ps := rawSSubscribe(t, cluster.Nodes()[2].Addr(), "myapp:events:"+topic)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{
		Client: client, Sharded: true, ChannelPrefix: "myapp:events:",
	}, nil)
	require.NoError(t, err)
	defer pub.Close()

	require.NoError(t, pub.Publish(topic, jsonMsg(1)))
	require.Equal(t, 1, rawN(t, receiveRaw(t, ps)))
	refused, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, Sharded: true}, nil)
	require.NoError(t, err)
	defer refused.Close()
	require.ErrorIs(t, refused.Publish(topic, jsonMsg(2)), redispubsub.ErrPublishRefused)
}
