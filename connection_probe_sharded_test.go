package redispubsub

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/hashslot"
)

// In sharded mode a node connection's probe channel is in a slot of its
// node and subscribed with SSUBSCRIBE, in a command of its own slot. When
// Redis answers that SSUBSCRIBE with MOVED (the Subscriber's slot map is
// older than the cluster's), the session goes without probes: the
// connection is live and Health does not wait for a probe that cannot
// come.
func TestProbe_ShardedProbeChannelMoved(t *testing.T) {
	s, fakes := newFakeShardedSubscriber(t, "a:1", "b:1")
	s.config.ProbeInterval = time.Hour // before any connection exists
	published := make(chan string, 10)
	s.probePublish = func(_ context.Context, channel, _ string) error {
		published <- channel
		return nil
	}
	p := resp(3)
	done := subscribeAsync(context.Background(), s, "x")
	fa := fakes["a:1"].accept()
	probe := ProbeTopicPrefix + s.id + ":1:{0}" // every slot is a:1's
	fa.expect("SSUBSCRIBE", "x")
	fa.expect("SSUBSCRIBE", probe)
	fa.send(p.confirm("ssubscribe", "x", 1))
	subscribed(t, done)
	require.ErrorIs(t, s.Health(context.Background()), ErrNotReady, "the probe's SSUBSCRIBE is owed")
	fa.send("-MOVED " + strconv.Itoa(hashslot.Of(probe)) + " 127.0.0.1:2\r\n")
	waitFor(t, func() bool { return s.Health(context.Background()) == nil })
	require.Empty(t, published)
}
