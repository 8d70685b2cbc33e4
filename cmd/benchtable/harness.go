package main

import (
	"fmt"
	"os"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/bench"
	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

// clusterMasters is the number of masters of the cluster of the cluster
// case.
const clusterMasters = 3

// startOwn starts a redis-server of its own, and, when the cases of cfg
// need one, a Redis Cluster of clusterMasters masters without replicas
// (cfg.NewClusterClient; only for the main table), on free ports, with the test harness's code. It
// returns the server's address and the function that stops them all,
// printing what fails.
func startOwn(cfg *bench.Config, table bool) (addr string, stop func(), err error) {
	var stops []func() error
	stop = func() {
		for _, f := range slices.Backward(stops) {
			if err := f(); err != nil {
				fmt.Fprintln(os.Stderr, "benchtable:", err)
			}
		}
	}
	srv, err := redisproc.Start(redisproc.Options{})
	if err != nil {
		return "", nil, err
	}
	stops = append(stops, srv.Close)
	if table && bench.NeedsCluster(cfg.Cases) {
		c, err := redisproc.StartCluster(redisproc.ClusterOptions{Masters: clusterMasters})
		if err != nil {
			stop()
			return "", nil, err
		}
		stops = append(stops, c.Close)
		addrs := c.Addrs()
		cfg.NewClusterClient = func() *redis.ClusterClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		}
	}
	return srv.Addr(), stop, nil
}
