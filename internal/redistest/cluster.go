package redistest

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

// clusterTimeout bounds how long a cluster may take to reach
// cluster_state:ok on every node.
const clusterTimeout = 30 * time.Second

// slotCount is the number of hash slots of a Redis Cluster.
const slotCount = 16384

// Cluster is a Redis Cluster of master-only nodes started by StartCluster.
type Cluster struct {
	nodes []*Server
}

// StartCluster starts a Redis Cluster of masters nodes (at least 1), each a
// Server as from Start with args plus --cluster-enabled yes,
// --cluster-config-file <Dir>/nodes.conf and --cluster-port on a second free
// port. It splits the 16384 hash slots evenly between the nodes
// (CLUSTER ADDSLOTSRANGE), joins them (CLUSTER MEET) and waits until every
// node reports cluster_state:ok and knows every other node. There are no
// replicas. The nodes are stopped in t.Cleanup.
func StartCluster(t testing.TB, masters int, args ...string) *Cluster {
	t.Helper()
	if masters < 1 {
		t.Fatalf("redistest: StartCluster: %d masters; need at least 1", masters)
	}
	c := &Cluster{nodes: make([]*Server, masters)}
	for i := range c.nodes {
		c.nodes[i] = StartOptions(t, redisproc.Options{Cluster: true, Args: args})
	}
	for i, n := range c.nodes {
		first, last := i*slotCount/masters, (i+1)*slotCount/masters-1
		n.Do(t, "CLUSTER", "ADDSLOTSRANGE", first, last)
	}
	// The cluster bus port is not port+10000 here, so MEET names it.
	for _, n := range c.nodes[1:] {
		c.nodes[0].Do(t, "CLUSTER", "MEET", "127.0.0.1", n.Port(), n.BusPort())
	}
	c.WaitOK(t)
	return c
}

// Nodes returns the cluster's nodes, in the order of their slot ranges:
// node i serves slots i*16384/n to (i+1)*16384/n-1.
func (c *Cluster) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// Addrs returns the addresses of the cluster's nodes, in the order of
// Nodes.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// NewClient returns a go-redis cluster client seeded with every node's
// address, closed in t.Cleanup.
func (c *Cluster) NewClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// WaitOK waits, bounded by 30s, until every node reports cluster_state:ok,
// all 16384 slots assigned and every node known; it fails the test
// otherwise. StartCluster calls it; call it again after restarting a node.
func (c *Cluster) WaitOK(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(clusterTimeout)
	backoff := 10 * time.Millisecond
	for {
		err := c.check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: cluster not ok within %v: %v", clusterTimeout, err)
		}
		time.Sleep(backoff) // backoff of a bounded poll
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// check returns nil when every node sees a healthy, complete cluster.
func (c *Cluster) check() error {
	for _, n := range c.nodes {
		v, err := n.Server.Do(context.Background(), "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", n.Addr(), err)
		}
		s, _ := v.(string)
		info := redisproc.ParseInfo(s)
		want := map[string]string{
			"cluster_state":          "ok",
			"cluster_slots_assigned": strconv.Itoa(slotCount),
			"cluster_slots_ok":       strconv.Itoa(slotCount),
			"cluster_known_nodes":    strconv.Itoa(len(c.nodes)),
		}
		for k, w := range want {
			if info[k] != w {
				return fmt.Errorf("%s: %s is %q, want %q", n.Addr(), k, info[k], w)
			}
		}
	}
	return nil
}
