package redistest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

// Cluster is a Redis Cluster started by StartCluster or
// StartClusterOptions, stopped in t.Cleanup. It embeds the
// *redisproc.Cluster that runs it; its own methods take a testing.TB, fail
// the test on error and return the nodes as *Server. Call them from the
// test goroutine, and do not overlap its operations (MigrateSlot,
// Failover, KillMaster).
type Cluster struct {
	*redisproc.Cluster
	nodes  []*Server
	byProc map[*redisproc.Server]*Server
}

// StartCluster starts a Redis Cluster of masters nodes (at least 1) and no
// replicas, each a Server as from Start with args plus --cluster-enabled
// yes, --cluster-config-file <Dir>/nodes.conf and --cluster-port on a
// second free port. It splits the 16384 hash slots evenly between the
// nodes (CLUSTER ADDSLOTSRANGE), joins them (CLUSTER MEET) and waits until
// every node reports cluster_state:ok and knows every other node. The
// nodes are stopped in t.Cleanup.
func StartCluster(t testing.TB, masters int, args ...string) *Cluster {
	t.Helper()
	return StartClusterOptions(t, redisproc.ClusterOptions{Masters: masters, Args: args})
}

// StartClusterOptions starts a cluster as redisproc.StartCluster does, for
// example 3 masters with a replica each:
//
//	cl := redistest.StartClusterOptions(t, redisproc.ClusterOptions{Masters: 3, Replicas: 1})
//
// An empty opts.Dir becomes a directory from t.TempDir, and opts.Logf, if
// nil, t.Logf. The nodes are stopped in t.Cleanup.
func StartClusterOptions(t testing.TB, opts redisproc.ClusterOptions) *Cluster {
	t.Helper()
	pc := started(t, &opts.Dir, &opts.Logf, func() (*redisproc.Cluster, error) { return redisproc.StartCluster(opts) })
	c := &Cluster{Cluster: pc, byProc: make(map[*redisproc.Server]*Server)}
	for _, n := range pc.Nodes() {
		s := &Server{Server: n, t: t}
		c.nodes = append(c.nodes, s)
		c.byProc[n] = s
	}
	return c
}

// Nodes returns every node, running or not: the masters in the order of
// their slot ranges (node i of n serves slots i*16384/n to
// (i+1)*16384/n-1 until a slot is migrated), then the replicas of master
// 0, of master 1, and so on. Roles change with failovers; Masters and
// Replicas tell the current ones.
func (c *Cluster) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// NodeID returns the cluster node id of s.
func (c *Cluster) NodeID(s *Server) string { return c.Cluster.NodeID(s.Server) }

// NewClient returns a go-redis cluster client seeded with every node's
// address, closed in t.Cleanup.
func (c *Cluster) NewClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// WaitOK waits, bounded by 30s, until the cluster has settled as
// redisproc.Cluster.WaitOK describes (cluster_state:ok on every running
// node, every slot served, every node known, the same view everywhere,
// replication links up); it fails the test otherwise. Call it after
// restarting a node.
func (c *Cluster) WaitOK(t testing.TB) {
	t.Helper()
	if err := c.Cluster.WaitOK(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Masters returns the masters that serve slots, ordered by their first
// slot.
func (c *Cluster) Masters(t testing.TB) []*Server {
	t.Helper()
	ms, err := c.Cluster.Masters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c.wrap(ms)
}

// Replicas returns the nodes that replicate master, running or not.
func (c *Cluster) Replicas(t testing.TB, master *Server) []*Server {
	t.Helper()
	rs, err := c.Cluster.Replicas(context.Background(), master.Server)
	if err != nil {
		t.Fatal(err)
	}
	return c.wrap(rs)
}

// SlotOwner returns the master that serves slot.
func (c *Cluster) SlotOwner(t testing.TB, slot int) *Server {
	t.Helper()
	s, err := c.Cluster.SlotOwner(context.Background(), slot)
	if err != nil {
		t.Fatal(err)
	}
	return c.byProc[s]
}

// ChannelOwner returns the master that serves the slot of channel
// (redisproc.KeySlot): where its SPUBLISH and SSUBSCRIBE go.
func (c *Cluster) ChannelOwner(t testing.TB, channel string) *Server {
	t.Helper()
	return c.SlotOwner(t, redisproc.KeySlot(channel))
}

// MigrateSlot moves slot to the master to (IMPORTING/MIGRATING, MIGRATE of
// its keys, SETSLOT NODE on every master) and waits until the cluster has
// settled with to serving it.
func (c *Cluster) MigrateSlot(t testing.TB, slot int, to *Server) {
	t.Helper()
	if err := c.Cluster.MigrateSlot(context.Background(), slot, to.Server); err != nil {
		t.Fatal(err)
	}
}

// Failover runs CLUSTER FAILOVER on a running replica of master and
// returns that replica once it is the master and the cluster has settled.
func (c *Cluster) Failover(t testing.TB, master *Server) *Server {
	t.Helper()
	s, err := c.Cluster.Failover(context.Background(), master.Server)
	if err != nil {
		t.Fatal(err)
	}
	return c.byProc[s]
}

// KillMaster kills master and returns the replica the cluster promoted,
// once the cluster has settled. master.Restart and WaitOK bring it back
// as a replica.
func (c *Cluster) KillMaster(t testing.TB, master *Server) *Server {
	t.Helper()
	s, err := c.Cluster.KillMaster(context.Background(), master.Server)
	if err != nil {
		t.Fatal(err)
	}
	return c.byProc[s]
}

// PubSubCounters reads the Pub/Sub counters of every node, in the order
// of Nodes; a node that is not running has only its Addr set.
func (c *Cluster) PubSubCounters(t testing.TB) []redisproc.PubSubCounters {
	t.Helper()
	pcs, err := c.Cluster.PubSubCounters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pcs
}

func (c *Cluster) wrap(ss []*redisproc.Server) []*Server {
	out := make([]*Server, len(ss))
	for i, s := range ss {
		out[i] = c.byProc[s]
	}
	return out
}
