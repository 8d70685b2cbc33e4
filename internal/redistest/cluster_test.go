package redistest_test

import (
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

func TestKeySlot(t *testing.T) {
	t.Parallel()
	s := redistest.StartCluster(t, 1).Nodes()[0]
	for _, k := range []string{"", "a", "foo", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "myapp:events:orders"} {
		assert.Equal(t, s.Do(t, "CLUSTER", "KEYSLOT", k), int64(redisproc.KeySlot(k)), "key %q", k)
	}
}

// One cluster of 3 masters with a replica each serves every subtest, in
// order: each leaves it settled.
func TestClusterReplicas(t *testing.T) {
	t.Parallel()
	start := time.Now()
	cl := redistest.StartClusterOptions(t, redisproc.ClusterOptions{Masters: 3, Replicas: 1})
	t.Logf("StartCluster took %v", time.Since(start))
	nodes := cl.Nodes()
	require.Len(t, nodes, 6)
	client := cl.NewClient(t)

	t.Run("up with replicas", func(t *testing.T) {
		assert.Equal(t, nodes[:3], cl.Masters(t))
		for i, m := range nodes[:3] {
			assert.Equal(t, []*redistest.Server{nodes[3+i]}, cl.Replicas(t, m))
			assert.Equal(t, m, cl.SlotOwner(t, i*16384/3))
			assert.Equal(t, m, cl.SlotOwner(t, (i+1)*16384/3-1))
			role := nodes[3+i].Do(t, "ROLE").([]any)
			assert.Equal(t, "slave", role[0])
			assert.Equal(t, int64(m.Port()), role[2])
		}
		require.NoError(t, client.Set(ctx(t), "k", "v", 0).Err())
	})

	t.Run("counters", func(t *testing.T) {
		const ch = "counters:ch"
		owner := cl.ChannelOwner(t, ch)
		before := cl.PubSubCounters(t)
		owner.Do(t, "SPUBLISH", ch, "x")
		owner.Do(t, "PUBLISH", ch, "x")
		// The bus messages reach the other nodes asynchronously.
		waitFor(t, 10*time.Second, func() bool {
			after := cl.PubSubCounters(t)
			for i, n := range nodes {
				d := func(f func(redisproc.PubSubCounters) int64) int64 { return f(after[i]) - f(before[i]) }
				isOwner := n == owner
				isOwnReplica := slices.Contains(cl.Replicas(t, owner), n)
				pub := d(func(c redisproc.PubSubCounters) int64 { return c.Publish })
				spub := d(func(c redisproc.PubSubCounters) int64 { return c.SPublish })
				busRecv := d(func(c redisproc.PubSubCounters) int64 { return c.BusPublishReceived })
				shardRecv := d(func(c redisproc.PubSubCounters) int64 { return c.BusShardReceived })
				switch {
				case isOwner:
					if pub != 1 || spub != 1 || d(func(c redisproc.PubSubCounters) int64 { return c.BusPublishSent }) != 5 ||
						d(func(c redisproc.PubSubCounters) int64 { return c.BusShardSent }) != 1 {
						return false
					}
				case isOwnReplica:
					if busRecv != 1 || shardRecv != 1 {
						return false
					}
				default:
					if busRecv != 1 || shardRecv != 0 {
						return false
					}
				}
			}
			return true
		})
	})

	t.Run("migrate slot", func(t *testing.T) {
		const ch = "migrate:ch"
		slot := redisproc.KeySlot(ch)
		from := cl.ChannelOwner(t, ch)
		to := cl.Masters(t)[0]
		if to == from {
			to = cl.Masters(t)[1]
		}
		key := "{" + ch + "}key"
		require.NoError(t, client.Set(ctx(t), key, "v", 0).Err())

		// A sharded subscriber at the old owner is told by Redis.
		sub := redis.NewClient(&redis.Options{Addr: from.Addr()})
		t.Cleanup(func() { _ = sub.Close() })
		ps := sub.SSubscribe(ctx(t), ch)
		t.Cleanup(func() { _ = ps.Close() })
		_, err := ps.Receive(ctx(t))
		require.NoError(t, err)

		cl.MigrateSlot(t, slot, to)
		assert.Equal(t, to, cl.SlotOwner(t, slot))
		assert.Equal(t, to, cl.ChannelOwner(t, ch))
		assert.Equal(t, "v", to.Do(t, "GET", key), "the key moved with its slot")
		assert.Equal(t, int64(0), from.Do(t, "CLUSTER", "COUNTKEYSINSLOT", slot), "nothing left at the old owner")
		v, err := client.Get(ctx(t), key).Result()
		require.NoError(t, err)
		assert.Equal(t, "v", v)

		msg, err := ps.Receive(ctx(t))
		require.NoError(t, err)
		assert.Equal(t, &redis.Subscription{Kind: "sunsubscribe", Channel: ch, Count: 0}, msg)
	})

	t.Run("CLUSTER FAILOVER", func(t *testing.T) {
		m := cl.Masters(t)[0]
		rep := cl.Replicas(t, m)[0]
		got := cl.Failover(t, m)
		assert.Equal(t, rep, got)
		assert.Contains(t, cl.Masters(t), rep)
		assert.NotContains(t, cl.Masters(t), m)
		assert.Equal(t, []*redistest.Server{m}, cl.Replicas(t, rep))
		require.NoError(t, client.Set(ctx(t), "k", "after failover", 0).Err())
	})

	t.Run("master killed", func(t *testing.T) {
		m := cl.Masters(t)[1]
		rep := cl.Replicas(t, m)[0]
		start := time.Now()
		got := cl.KillMaster(t, m)
		t.Logf("KillMaster took %v", time.Since(start))
		assert.Equal(t, rep, got)
		assert.False(t, m.Running())
		assert.Contains(t, cl.Masters(t), rep)
		assert.NotContains(t, cl.Masters(t), m)
		for i := range 16 {
			require.NoError(t, client.Set(ctx(t), string(rune('a'+i)), "after kill", 0).Err())
		}

		start = time.Now()
		m.Restart()
		cl.WaitOK(t)
		t.Logf("Restart and WaitOK took %v", time.Since(start))
		assert.Equal(t, []*redistest.Server{m}, cl.Replicas(t, rep), "back as a replica")
	})
}

// waitFor polls cond on the test goroutine, with a short backoff, until it
// holds; it fails the test if it does not within timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	backoff := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(backoff) // backoff of a bounded poll
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}
