package tests

// End-to-end liveness (issue 19): a connection that answers PING but no
// longer receives what publishers publish is found deaf by the probes and
// re-established; the probes are never delivered and stop with Close.

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// A failover behind a fixed address: the Subscriber reaches Redis through a
// proxy, which then sends new connections to a second server while the
// established ones stay on the first; the first server's normal clients
// are killed, so that publishers (and the probes, through the same client)
// move to the second. With the defaults, the probes find the Subscriber's
// connection deaf, it reconnects (to the second server) and delivery
// resumes within two probe intervals.
func TestLivenessDeafConnectionBehindAFixedAddress(t *testing.T) {
	first, second := redistest.Start(t), redistest.Start(t)
	proxy := redistest.NewProxy(t, first.Addr())
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	requireDeafDetected(t, client, func() {
		proxy.Retarget(second.Addr())
		require.Positive(t, first.KillClients(t, "TYPE", "normal"))
	})
}

// A Sentinel split brain: the replica is promoted by hand (REPLICAOF NO
// ONE) and the sentinel is told it is the master now, while the old master
// stays up and reachable, a master still, with the Subscriber's connection
// on it. Its normal clients are killed, so that publishers ask the sentinel
// again and move to the new master. With the defaults, the probes find the
// Subscriber's connection deaf, it reconnects (go-redis's failover dialer
// asks the sentinel for the master again) and delivery resumes within two
// probe intervals.
func TestLivenessSentinelSplitBrain(t *testing.T) {
	sn := redistest.StartSentinel(t, redisproc.SentinelOptions{})
	client := sn.NewFailoverClient(t)
	old := sn.Master(t)
	var replica *redistest.Server
	for _, s := range sn.Servers() {
		if s != old {
			replica = s
		}
	}
	require.NotNil(t, replica)
	requireDeafDetected(t, client, func() {
		replica.Do(t, "REPLICAOF", "NO", "ONE")
		host, port, _ := strings.Cut(replica.Addr(), ":")
		for _, sentinel := range sn.Sentinels() {
			sentinel.Do(t, "SENTINEL", "REMOVE", sn.MasterName())
			sentinel.Do(t, "SENTINEL", "MONITOR", sn.MasterName(), host, port, "1")
		}
		testutil.Eventually(t, func() bool { return sn.Master(t) == replica }, "the sentinel names the promoted replica")
		require.Equal(t, "master", old.Info(t, "replication")["role"], "the old master stays a master")
		require.Positive(t, old.KillClients(t, "TYPE", "normal"))
	})
}

// requireDeafDetected runs a Subscriber with the default configuration
// (hooks aside) on client and a Publisher on the same client, checks that a
// message arrives and that the Subscriber is healthy, calls split (which
// leaves the Subscriber's connection where it is and sends the client's
// new connections elsewhere), then publishes until a message arrives again.
// It requires that the connection was dropped as deaf, reconnected and
// reported so, and that both took less than two probe intervals (the times
// are logged).
func requireDeafDetected(t *testing.T, client redis.UniversalClient, split func()) {
	disconnected := make(chan redispubsub.DisconnectEvent, 10)
	reconnected := make(chan redispubsub.ReconnectEvent, 10)
	sub := wmSubscriber(t, nil, func(c *redispubsub.SubscriberConfig) {
		c.Client = client
		c.OnDisconnect = func(ev redispubsub.DisconnectEvent) { disconnected <- ev }
		c.OnReconnect = func(ev redispubsub.ReconnectEvent) { reconnected <- ev }
	})
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client}, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	const topic = "liveness.deaf"
	ch, _ := testutil.Subscribe(t, sub, topic)
	require.NoError(t, pub.Publish(topic, message.NewMessage("before", []byte(`{}`))))
	testutil.Receive(t, ch).Ack()
	testutil.Eventually(t, func() bool { return sub.Health(context.Background()) == nil }, "the Subscriber is healthy")

	split()
	splitAt := time.Now()
	// Publish until the end of the test: what goes out before the
	// Subscriber reconnects is lost (Redis Pub/Sub keeps nothing).
	ctx, stop := context.WithCancel(context.Background())
	var publishing sync.WaitGroup
	publishing.Add(1)
	go func() {
		defer publishing.Done()
		ticker := time.NewTicker(20 * time.Millisecond)
		defer ticker.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			_ = pub.Publish(topic, message.NewMessage("after-"+strconv.Itoa(i), []byte(`{}`)))
		}
	}()
	defer func() {
		stop()
		publishing.Wait()
	}()

	lost := testutil.Wait(t, disconnected, "OnDisconnect")
	detected := time.Since(splitAt)
	require.ErrorIs(t, lost.Cause, redispubsub.ErrConnectionDeaf)
	back := testutil.Wait(t, reconnected, "OnReconnect")
	require.ErrorIs(t, back.Cause, redispubsub.ErrConnectionDeaf)
	require.Equal(t, 1, back.Topics)
	msg := testutil.Receive(t, ch)
	resumed := time.Since(splitAt)
	msg.Ack()
	require.True(t, strings.HasPrefix(msg.UUID, "after-"), msg.UUID)
	require.EqualValues(t, 1, sub.Stats().DeafConnections)
	testutil.Eventually(t, func() bool { return sub.Health(context.Background()) == nil }, "the Subscriber is healthy again")
	t.Logf("probe interval %v: deaf connection detected %v after the split, delivery resumed after %v",
		redispubsub.DefaultProbeInterval, detected.Round(time.Millisecond), resumed.Round(time.Millisecond))
	// The README's guarantee: within two probe intervals.
	require.Less(t, detected, 2*redispubsub.DefaultProbeInterval, "deaf connection detected within two probe intervals")
	require.Less(t, resumed, 2*redispubsub.DefaultProbeInterval, "delivery resumed within two probe intervals")
}

// Probes are never delivered, not even to a pattern subscription that
// matches every channel of the prefix, and never count as received; what
// the watcher saw before Close returned is numbered within the probes sent.
func TestLivenessProbesAreNeverDeliveredAndStopWithClose(t *testing.T) {
	srv := redistest.Start(t)
	const prefix = "liveness:"
	const interval = 50 * time.Millisecond // many probes in little time
	watcher := srv.NewClient(t).PSubscribe(context.Background(), prefix+redispubsub.ProbeTopicPrefix+"*")
	t.Cleanup(func() { _ = watcher.Close() })
	_, err := watcher.Receive(context.Background()) // the confirmation
	require.NoError(t, err)

	sub := wmSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) {
		c.ChannelPrefix, c.ProbeInterval = prefix, interval
	})
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t), ChannelPrefix: prefix}, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	all, err := sub.SubscribePattern(context.Background(), "*")
	require.NoError(t, err)
	testutil.Eventually(t, func() bool { return sub.Stats().ProbesReceived >= 3 }, "probes arrived")
	require.NoError(t, pub.Publish("orders", message.NewMessage("order", []byte(`{}`))))
	msg := testutil.Receive(t, all)
	require.Equal(t, "order", msg.UUID)
	msg.Ack()
	stats := sub.Stats()
	require.EqualValues(t, 1, stats.Received, "probes are not messages")
	require.Positive(t, stats.ProbeRoundTrip.Count)
	select {
	case msg := <-all:
		t.Fatalf("a probe was delivered: %s %s", msg.Metadata.Get(redispubsub.MetadataTopic), msg.Payload)
	default:
	}

	require.NoError(t, sub.Close())
	sent := sub.Stats().ProbesSent // one connection, one session: probes 1 to sent
	// What the Subscriber published before Close returned may still be on
	// its way to the watcher: a marker published by the test now comes
	// after all of it. That Close ends a probe under way and waits for it,
	// so that none is published after it, is TestProbe_CloseEndsAProbeUnderWay
	// (on the fake socket, synchronised on the probe's PUBLISH).
	marker := prefix + redispubsub.ProbeTopicPrefix + "marker"
	require.NoError(t, srv.NewClient(t).Publish(context.Background(), marker, "end").Err())
	seen := 0
	for {
		m, err := watcher.ReceiveMessage(testutil.Context(t))
		require.NoError(t, err)
		if m.Channel == marker {
			break
		}
		seen++
		n, err := strconv.ParseUint(m.Payload, 10, 64)
		require.NoError(t, err)
		// The probe whose PUBLISH Close cut short may have reached Redis
		// uncounted: sent+1 at most.
		require.LessOrEqual(t, n, sent+1, "probe %d published after Close (%d sent before)", n, sent)
	}
	require.GreaterOrEqual(t, seen, 3, "the watcher saw the probes")
}
