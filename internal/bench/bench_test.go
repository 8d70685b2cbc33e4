package bench

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// tinyConfig runs every case but the cluster case with every system, each
// in a few messages or topics, against srv.
func tinyConfig(srv *redistest.Server) Config {
	return Config{
		NewClient:        func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: srv.Addr()}) },
		ClusterChannels:  8,
		Prefix:           "bench-test:",
		Sizes:            []int{8, 300},
		Duration:         20 * time.Millisecond,
		Rounds:           2,
		Publishers:       4,
		LatencySamples:   5,
		LatencyRate:      1000,
		Topics:           20,
		ManyTopics:       50,
		SubscribeWorkers: 5,
		StallTimeout:     10 * time.Second,
		SubscribeTimeout: 30 * time.Second,
	}
}

// TestRunEveryCase runs every case on every system, tiny, the cluster case
// on a cluster of 3 masters, and checks that every cell it applies to was
// measured, and that nothing is left on the server or the cluster.
func TestRunEveryCase(t *testing.T) {
	srv := redistest.Start(t)
	cluster := redistest.StartCluster(t, 3)
	cfg := tinyConfig(srv)
	cfg.NewClusterClient = func() *redis.ClusterClient {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs()})
	}
	var progress strings.Builder
	cfg.Progress = &progress

	rep, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	assert.Equal(t, "3 masters, 0 replicas", rep.Cluster)

	// The watermill-nats column is measured where nats-server is
	// installed, and says so where it is not.
	_, noNATS := findNATSServer("")
	require.Len(t, rep.Systems, len(SystemIDs()))
	var seen []string
	for _, row := range rep.Rows {
		if !slices.Contains(seen, row.Case) {
			seen = append(seen, row.Case)
		}
		want := SystemIDs()
		switch {
		case strings.HasPrefix(row.Case, "subscribe") || strings.HasPrefix(row.Case, "eventtarget"):
			want = []string{"go-redis", "adapter", "gochannel", "handoff"}
		case row.Case == "cluster-publish":
			want = []string{"go-redis", "adapter", "handoff"}
		case strings.HasPrefix(row.Case, "router"):
			want = []string{"adapter", "gochannel", "handoff"}
		case row.Case == "probes":
			want = []string{"adapter", "handoff"}
		}
		handoffNA := !slices.Contains([]string{"e2e-batch", "e2e-parallel", "latency"}, row.Case)
		busSharded := row.Metric == "bus/msg sharded"
		var got []string
		for _, id := range SystemIDs() {
			v, ok := row.Values[id]
			if !ok {
				continue
			}
			got = append(got, id)
			switch {
			case id == "handoff" && handoffNA:
				assert.Equal(t, Value{Skipped: "n/a"}, v, "%s %d %s", row.Title, row.Size, id)
				continue
			case id == "nats" && noNATS != nil:
				assert.Equal(t, Value{Skipped: "not installed"}, v, "%s %d %s", row.Title, row.Size, id)
				continue
			}
			if assert.NoError(t, v.Err, "%s %d %s", row.Title, row.Size, id) && row.Unit != Bytes && !busSharded {
				assert.Positive(t, v.V, "%s %d %s", row.Title, row.Size, id)
			}
			switch row.Metric {
			case "bus/msg classic": // to each of the other two masters
				assert.Equal(t, 2.0, v.V, "%s %s", row.Title, id)
			case "bus/msg sharded": // no replicas
				assert.Equal(t, 0.0, v.V, "%s %s", row.Title, id)
			}
		}
		assert.Equal(t, want, got, row.Title)
		_, ok := row.Ratio()
		noRatio := strings.Contains(row.Title, "stacks") || row.Unit == Ratio || busSharded || // raw go-redis's 0
			strings.HasPrefix(row.Case, "router") || row.Case == "probes" // no raw go-redis column
		assert.Equal(t, !noRatio, ok, row.Title)
	}
	assert.Equal(t, CaseIDs(), seen)
	// Per size: e2e-batch 2 rows, e2e-parallel 1, publish 1, latency 2;
	// then subscribe 1, subscribe-many 3, eventtarget-many 3, router-1ms
	// 3, router-10ms 3, probes 3, cluster-publish 8.
	assert.Len(t, rep.Rows, 2*(2+1+1+2)+1+3+3+3+3+3+8)
	// Per size: 3 throughput cases of 2 rounds, latency, on the 5 Redis
	// systems and gochannel, on watermill-nats where it is installed, and
	// the hand-off in 2 of them; then 3 subscribe cases on 3 systems, 2
	// router cases of 2 rounds on 2, probes of 2 rounds on 1,
	// cluster-publish of 2 rounds on 2.
	natsCells := 3*2 + 1
	if noNATS != nil {
		natsCells = 0
	}
	assert.Equal(t, 2*((3*2+1)*6+natsCells+(2*2+1))+3*3+2*2*2+2+2*2, strings.Count(progress.String(), "\n"), progress.String())

	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), "| case | size | raw go-redis | adapter (envelope) | adapter (rawjson) | adapter (msgpack) | redisstream | watermill-nats | gochannel | bare Ack hand-off | adapter / raw |")
	assert.NotContains(t, table.String(), "failed")

	assert.Equal(t, int64(0), srv.Do(t, "DBSIZE"), "redisstream's streams are deleted")
	testutil.Eventually(t, func() bool {
		return len(srv.Do(t, "PUBSUB", "CHANNELS", cfg.Prefix+"*").([]any)) == 0
	}, "every subscription ends")
	for _, node := range cluster.Nodes() {
		testutil.Eventually(t, func() bool {
			return len(node.Do(t, "PUBSUB", "CHANNELS", cfg.Prefix+"*").([]any)) == 0 &&
				len(node.Do(t, "PUBSUB", "SHARDCHANNELS", cfg.Prefix+"*").([]any)) == 0
		}, "every subscription on "+node.Addr()+" ends")
	}
}

// TestRunSelects runs only the cases and systems it is asked for.
func TestRunSelects(t *testing.T) {
	srv := redistest.Start(t)
	cfg := tinyConfig(srv)
	cfg.Cases = []string{"publish", "subscribe", "cluster-publish"}
	cfg.Systems = []string{"go-redis", "adapter"}
	cfg.Sizes = []int{16}

	rep, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Equal(t, []System{{"go-redis", "raw go-redis"}, {"adapter", "adapter (envelope)"}}, rep.Systems)
	require.Len(t, rep.Rows, 2, "no cluster, no cluster case")
	for _, row := range rep.Rows {
		assert.Len(t, row.Values, 2, row.Title)
	}
	assert.Contains(t, rep.Notes, "*cluster-publish*: not run: it needs a Redis Cluster, and none was given.")
	assert.Empty(t, rep.Cluster)
}

// TestRunRouterCases runs the router cases alone: a row per MaxInFlight
// with the adapter measured in each, gochannel's one measurement in every
// row, and the quotient row of the 10 ms handler the quotient of its rows.
func TestRunRouterCases(t *testing.T) {
	srv := redistest.Start(t)
	cfg := tinyConfig(srv)
	cfg.Cases = []string{"router-1ms", "router-10ms"}
	cfg.Systems = []string{"adapter", "gochannel"}
	cfg.Rounds = 1

	rep, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	var titles []string
	for _, row := range rep.Rows {
		titles = append(titles, row.Title)
		require.Len(t, row.Values, 2, row.Title)
		for id, v := range row.Values {
			require.NoError(t, v.Err, "%s %s", row.Title, id)
			assert.Positive(t, v.V, "%s %s", row.Title, id)
		}
		assert.Equal(t, routerSize, row.Size)
	}
	assert.Equal(t, []string{
		"router, handler of 1 ms, MaxInFlight 1 (msg/s)",
		"router, handler of 1 ms, MaxInFlight 16 (msg/s)",
		"router, handler of 1 ms, MaxInFlight 64 (msg/s)",
		"router, handler of 10 ms, MaxInFlight 1 (msg/s)",
		"router, handler of 10 ms, MaxInFlight 64 (msg/s)",
		"router, handler of 10 ms: MaxInFlight 64 / 1",
	}, titles)
	for _, rows := range [][]*Row{rep.Rows[:3], rep.Rows[3:5]} {
		for _, row := range rows[1:] {
			assert.Equal(t, rows[0].Values["gochannel"], row.Values["gochannel"], "gochannel: one measurement, its default, in every row")
		}
	}
	one, sixtyFour, quotient := rep.Rows[3].Values["adapter"].V, rep.Rows[4].Values["adapter"].V, rep.Rows[5].Values["adapter"].V
	assert.InDelta(t, sixtyFour/one, quotient, 1e-9)
	assert.Equal(t, Ratio, rep.Rows[5].Unit)
}

func TestNeedsCluster(t *testing.T) {
	assert.True(t, NeedsCluster(nil), "every case")
	assert.True(t, NeedsCluster([]string{"publish", "cluster-publish"}))
	assert.False(t, NeedsCluster([]string{"publish", "latency"}))
}

func TestRunUnreachableRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	_, err = Run(context.Background(), Config{NewClient: func() redis.UniversalClient {
		return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	}})
	require.ErrorContains(t, err, "redis does not answer")
}

func TestRunRejectsBadConfig(t *testing.T) {
	newClient := func() redis.UniversalClient { panic("not called") }
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no client", Config{}, "NewClient is required"},
		{"small payload", Config{NewClient: newClient, Sizes: []int{7}}, "below the minimum of 8"},
		{"unknown case", Config{NewClient: newClient, Cases: []string{"nope"}}, `unknown case "nope"`},
		{"unknown system", Config{NewClient: newClient, Systems: []string{"kafka"}}, `unknown system "kafka"`},
		{"negative count", Config{NewClient: newClient, Batch: -1}, "counts must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
