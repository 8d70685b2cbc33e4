package redisproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ClusterTimeout bounds StartCluster and each wait of a Cluster's
// operations for the cluster to settle (Cluster.WaitOK).
const ClusterTimeout = 30 * time.Second

// DefaultNodeTimeout is the cluster-node-timeout of a cluster with
// replicas when ClusterOptions.NodeTimeout is 0: a master unreachable this
// long is failed over, so KillMaster takes about this plus one second.
const DefaultNodeTimeout = 2 * time.Second

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Masters is the number of masters, at least 1. Master i serves the
	// hash slots i*16384/Masters to (i+1)*16384/Masters-1.
	Masters int
	// Replicas is the number of replicas of each master, 0 or more.
	Replicas int
	// NodeTimeout is the cluster-node-timeout. 0 means DefaultNodeTimeout
	// when Replicas > 0, and Redis's default (15s) otherwise, so that a
	// master-only cluster on a loaded machine never marks a slow node as
	// failed.
	NodeTimeout time.Duration
	// Binary is the redis-server to run; "" means the result of Binary.
	Binary string
	// Dir is the directory that holds one directory per node (node0,
	// node1, ...); it must exist. "" means a new temporary directory that
	// Close removes.
	Dir string
	// Args are extra options of every node, as in Options.Args. The nodes
	// run with --repl-diskless-sync-delay 0 unless Args say otherwise.
	Args []string
	// Logf, as in Options.Logf.
	Logf func(format string, args ...any)
}

// Cluster is a Redis Cluster of redis-server processes on 127.0.0.1 started
// by StartCluster. Its methods are safe for concurrent use, but its
// operations (MigrateSlot, Failover, KillMaster) should not overlap. Close
// stops every node.
type Cluster struct {
	nodes    []*Server
	masters  int
	replicas int
	dir      string
	ownDir   bool
	ids      map[*Server]string // node ids, fixed by each node's nodes.conf
	byID     map[string]*Server
	byPort   map[int]*Server
}

// StartCluster starts opts.Masters masters and opts.Replicas replicas of
// each, every one a Server as from Start with Options.Cluster and
// opts.Args. It gives each master its slot range (CLUSTER ADDSLOTSRANGE),
// joins the nodes (CLUSTER MEET), makes replica j of master i replicate it
// (CLUSTER REPLICATE), and waits until the cluster is ok (see WaitOK). The
// nodes are, in the order of Nodes: the masters by slot range, then the
// replicas of master 0, of master 1, and so on.
func StartCluster(opts ClusterOptions) (_ *Cluster, err error) {
	if opts.Masters < 1 || opts.Replicas < 0 {
		return nil, fmt.Errorf("redisproc: StartCluster: %d masters, %d replicas each; need at least 1 master", opts.Masters, opts.Replicas)
	}
	c := &Cluster{
		masters:  opts.Masters,
		replicas: opts.Replicas,
		dir:      opts.Dir,
		ids:      make(map[*Server]string),
		byID:     make(map[string]*Server),
		byPort:   make(map[int]*Server),
	}
	if c.dir, c.ownDir, err = workDir(c.dir, "redisproc-cluster-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	timeout := opts.NodeTimeout
	if timeout == 0 && opts.Replicas > 0 {
		timeout = DefaultNodeTimeout
	}
	// A replica's full sync starts at once instead of after 5s.
	args := []string{"--repl-diskless-sync-delay", "0"}
	if timeout > 0 {
		args = append(args, "--cluster-node-timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	}
	args = append(args, opts.Args...)

	ctx, cancel := context.WithTimeout(context.Background(), ClusterTimeout)
	defer cancel()
	total := opts.Masters * (1 + opts.Replicas)
	for i := range total {
		s, err := startIn(c.dir, "node"+strconv.Itoa(i), Options{Binary: opts.Binary, Args: args, Cluster: true, Logf: opts.Logf})
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, s)
		id, err := s.Do(ctx, "CLUSTER", "MYID")
		if err != nil {
			return nil, fmt.Errorf("redisproc: %s: CLUSTER MYID: %w", s.Addr(), err)
		}
		c.ids[s] = fmt.Sprint(id)
		c.byID[fmt.Sprint(id)] = s
		c.byPort[s.Port()] = s
	}
	for i, s := range c.nodes[:opts.Masters] {
		first, last := i*SlotCount/opts.Masters, (i+1)*SlotCount/opts.Masters-1
		if _, err := s.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last); err != nil {
			return nil, fmt.Errorf("redisproc: %s: CLUSTER ADDSLOTSRANGE: %w", s.Addr(), err)
		}
	}
	// The cluster bus port is not port+10000 here, so MEET names it.
	for _, s := range c.nodes[1:] {
		if _, err := c.nodes[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", s.Port(), s.BusPort()); err != nil {
			return nil, fmt.Errorf("redisproc: CLUSTER MEET %s: %w", s.Addr(), err)
		}
	}
	for i, s := range c.nodes[opts.Masters:] {
		master := c.nodes[i/opts.Replicas]
		// The replica must know its master's id first, which gossip brings.
		err := poll(ctx, func() error {
			_, err := s.Do(ctx, "CLUSTER", "REPLICATE", c.ids[master])
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("redisproc: %s: CLUSTER REPLICATE %s: %w", s.Addr(), master.Addr(), err)
		}
	}
	if err := c.WaitOK(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Nodes returns every node, running or not, in the order of StartCluster:
// the masters by slot range, then the replicas. Roles change with
// failovers; Masters and Replicas tell the current ones.
func (c *Cluster) Nodes() []*Server { return slices.Clone(c.nodes) }

// Addrs returns the addresses of Nodes, in their order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// NodeID returns the cluster node id of s, or "" if s is not a node of c.
func (c *Cluster) NodeID(s *Server) string { return c.ids[s] }

// Close stops every node, as Server.Close does, and removes the directory
// that StartCluster made, if it made one.
func (c *Cluster) Close() error { return closeAll(c.nodes, c.dir, c.ownDir) }

// closeAll closes servers, all at once, and then removes dir if ownDir.
func closeAll(servers []*Server, dir string, ownDir bool) error {
	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Close()
		}()
	}
	wg.Wait()
	if ownDir {
		_ = os.RemoveAll(dir)
	}
	return errors.Join(errs...)
}

// WaitOK waits, bounded by ctx and by ClusterTimeout, until the cluster
// has settled: every running node reports cluster_state:ok, all 16384
// slots assigned and served, and every node known; every running node has
// the same view of the cluster (the role, master and slots of each node,
// and which nodes are failed), in which every running node is reachable
// and every stopped one is marked failed; and every running replica of a
// running master has its replication link up. StartCluster, MigrateSlot,
// Failover and KillMaster call it; call it after restarting a node.
func (c *Cluster) WaitOK(ctx context.Context) error {
	if err := pollFor(ctx, ClusterTimeout, c.check); err != nil {
		return fmt.Errorf("redisproc: cluster not ok: %w", err)
	}
	return nil
}

// check returns nil when the cluster has settled, as WaitOK describes.
func (c *Cluster) check(ctx context.Context) error {
	var ref string
	var refAddr string
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		info, err := n.ClusterInfo(ctx)
		if err != nil {
			return err
		}
		want := map[string]string{
			"cluster_state":          "ok",
			"cluster_slots_assigned": strconv.Itoa(SlotCount),
			"cluster_slots_ok":       strconv.Itoa(SlotCount),
			"cluster_known_nodes":    strconv.Itoa(len(c.nodes)),
		}
		for k, w := range want {
			if info[k] != w {
				return fmt.Errorf("%s: %s is %q, want %q", n.Addr(), k, info[k], w)
			}
		}
		view, err := c.view(ctx, n)
		if err != nil {
			return err
		}
		canon, err := c.canonical(view)
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if ref == "" {
			ref, refAddr = canon, n.Addr()
		} else if canon != ref {
			return fmt.Errorf("views differ:\n%s:\n%s%s:\n%s", refAddr, ref, n.Addr(), canon)
		}
		self := view.find(c.ids[n])
		if self == nil || self.role() != "slave" {
			continue
		}
		if m := c.byID[self.master]; m == nil || !m.Running() {
			continue
		}
		repl, err := n.Info(ctx, "replication")
		if err != nil {
			return err
		}
		if repl["master_link_status"] != "up" {
			return fmt.Errorf("%s: master_link_status is %q", n.Addr(), repl["master_link_status"])
		}
	}
	if ref == "" {
		return errors.New("no node is running")
	}
	return nil
}

// canonical describes a node's view of the cluster in a form that is the
// same on every node that agrees, and checks that it marks exactly the
// stopped nodes as failed.
func (c *Cluster) canonical(v clusterView) (string, error) {
	var b strings.Builder
	for _, e := range v {
		s := c.byID[e.id]
		if s == nil {
			return "", fmt.Errorf("unknown node %s at port %d", e.id, e.port)
		}
		failed := e.flags["fail"]
		switch {
		case e.flags["handshake"] || e.flags["noaddr"] || e.flags["fail?"]:
			return "", fmt.Errorf("node %s has flags %s", s.Addr(), e.flagText)
		case s.Running() && (failed || e.link != "connected"):
			return "", fmt.Errorf("running node %s is %s, %s", s.Addr(), e.flagText, e.link)
		case !s.Running() && !failed:
			return "", fmt.Errorf("stopped node %s is not marked failed (%s)", s.Addr(), e.flagText)
		}
		fmt.Fprintf(&b, "%s %s master=%s failed=%t slots=%s\n",
			s.Addr(), e.role(), e.master, failed, strings.Join(e.slots, ","))
	}
	return b.String(), nil
}

// view returns n's CLUSTER NODES, sorted by node id.
func (c *Cluster) view(ctx context.Context, n *Server) (clusterView, error) {
	v, err := n.Do(ctx, "CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER NODES: %w", n.Addr(), err)
	}
	view, err := parseClusterNodes(fmt.Sprint(v))
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER NODES: %w", n.Addr(), err)
	}
	return view, nil
}

// currentView returns the view of the first running node.
func (c *Cluster) currentView(ctx context.Context) (clusterView, error) {
	for _, n := range c.nodes {
		if n.Running() {
			return c.view(ctx, n)
		}
	}
	return nil, errors.New("redisproc: no node of the cluster is running")
}

// Masters returns the masters that serve slots, ordered by their first
// slot, as the first running node sees them.
func (c *Cluster) Masters(ctx context.Context) ([]*Server, error) {
	view, err := c.currentView(ctx)
	if err != nil {
		return nil, err
	}
	type master struct {
		s     *Server
		first int
	}
	var ms []master
	for _, e := range view {
		if e.role() == "master" && !e.flags["fail"] && len(e.slots) > 0 {
			first, _, _ := parseSlotRange(e.slots[0])
			ms = append(ms, master{c.byID[e.id], first})
		}
	}
	slices.SortFunc(ms, func(a, b master) int { return a.first - b.first })
	out := make([]*Server, len(ms))
	for i, m := range ms {
		out[i] = m.s
	}
	return out, nil
}

// Replicas returns the nodes that replicate master, running or not, as the
// first running node sees them, in the order of Nodes.
func (c *Cluster) Replicas(ctx context.Context, master *Server) ([]*Server, error) {
	view, err := c.currentView(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Server
	for _, n := range c.nodes {
		if e := view.find(c.ids[n]); e != nil && e.role() == "slave" && e.master == c.ids[master] {
			out = append(out, n)
		}
	}
	return out, nil
}

// SlotOwner returns the master that serves slot, as the first running node
// sees it.
func (c *Cluster) SlotOwner(ctx context.Context, slot int) (*Server, error) {
	view, err := c.currentView(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range view {
		if e.role() == "master" && !e.flags["fail"] && e.serves(slot) {
			return c.byID[e.id], nil
		}
	}
	return nil, fmt.Errorf("redisproc: no master serves slot %d", slot)
}

// ChannelOwner returns the master that serves the slot of a channel (or
// key), KeySlot(channel): the node where SPUBLISH and SSUBSCRIBE of that
// channel go.
func (c *Cluster) ChannelOwner(ctx context.Context, channel string) (*Server, error) {
	return c.SlotOwner(ctx, KeySlot(channel))
}

// MigrateSlot moves slot from the master that serves it to the master to,
// as redis-cli --cluster reshard does: CLUSTER SETSLOT slot IMPORTING on
// to, SETSLOT slot MIGRATING on the owner, MIGRATE of the slot's keys, if
// any, then SETSLOT slot NODE on to, on the old owner and on every other
// master. It returns once the cluster has settled (WaitOK) with to serving
// slot. It fails if to is not a master or serves slot already.
func (c *Cluster) MigrateSlot(ctx context.Context, slot int, to *Server) error {
	from, err := c.SlotOwner(ctx, slot)
	if err != nil {
		return err
	}
	if from == to {
		return fmt.Errorf("redisproc: MigrateSlot: %s serves slot %d already", to.Addr(), slot)
	}
	masters, err := c.Masters(ctx)
	if err != nil {
		return err
	}
	if !slices.Contains(masters, to) {
		return fmt.Errorf("redisproc: MigrateSlot: %s is not a master", to.Addr())
	}
	fromID, toID := c.ids[from], c.ids[to]
	do := func(s *Server, args ...any) (any, error) {
		v, err := s.Do(ctx, args...)
		if err != nil {
			return nil, fmt.Errorf("redisproc: MigrateSlot %d: %s %v: %w", slot, s.Addr(), args, err)
		}
		return v, nil
	}
	if _, err := do(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID); err != nil {
		return err
	}
	if _, err := do(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID); err != nil {
		return err
	}
	for {
		v, err := do(from, "CLUSTER", "GETKEYSINSLOT", slot, 100)
		if err != nil {
			return err
		}
		keys, _ := v.([]any)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", to.Port(), "", 0, AdminTimeout.Milliseconds(), "KEYS"}
		if _, err := do(from, append(args, keys...)...); err != nil {
			return err
		}
	}
	// The new owner first, then the old one, then the others, as the
	// Redis Cluster specification recommends.
	order := []*Server{to, from}
	for _, m := range masters {
		if m != to && m != from {
			order = append(order, m)
		}
	}
	for _, m := range order {
		if _, err := do(m, "CLUSTER", "SETSLOT", slot, "NODE", toID); err != nil {
			return err
		}
	}
	if err := c.WaitOK(ctx); err != nil {
		return err
	}
	if owner, err := c.SlotOwner(ctx, slot); err != nil || owner != to {
		return fmt.Errorf("redisproc: MigrateSlot %d: owner after the move is %v (%v), want %s", slot, owner, err, to.Addr())
	}
	return nil
}

// Failover makes a running replica of master take its place with CLUSTER
// FAILOVER run on the replica (a manual failover: the master stops taking
// writes until the replica has caught up, then they swap roles). It
// returns the replica, once the cluster has settled with it as a master
// and master as its replica.
func (c *Cluster) Failover(ctx context.Context, master *Server) (*Server, error) {
	rep, err := c.runningReplica(ctx, master)
	if err != nil {
		return nil, err
	}
	if _, err := rep.Do(ctx, "CLUSTER", "FAILOVER"); err != nil {
		return nil, fmt.Errorf("redisproc: %s: CLUSTER FAILOVER: %w", rep.Addr(), err)
	}
	return rep, c.waitPromoted(ctx, []*Server{rep})
}

// KillMaster kills master (Server.Kill) and waits until the cluster has
// promoted one of its running replicas and settled (WaitOK), with master
// marked failed; it returns the promoted replica. Restart the old master
// and call WaitOK to have it back, as a replica. How long the promotion
// takes depends on ClusterOptions.NodeTimeout.
func (c *Cluster) KillMaster(ctx context.Context, master *Server) (*Server, error) {
	reps, err := c.Replicas(ctx, master)
	if err != nil {
		return nil, err
	}
	reps = slices.DeleteFunc(reps, func(s *Server) bool { return !s.Running() })
	if len(reps) == 0 {
		return nil, fmt.Errorf("redisproc: %s has no running replica", master.Addr())
	}
	if err := master.Kill(); err != nil {
		return nil, err
	}
	if err := c.waitPromoted(ctx, reps); err != nil {
		return nil, err
	}
	masters, err := c.Masters(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range reps {
		if slices.Contains(masters, r) {
			return r, nil
		}
	}
	return nil, errors.New("redisproc: KillMaster: promoted replica not found") // waitPromoted saw it
}

// runningReplica returns the first running replica of master.
func (c *Cluster) runningReplica(ctx context.Context, master *Server) (*Server, error) {
	reps, err := c.Replicas(ctx, master)
	if err != nil {
		return nil, err
	}
	for _, r := range reps {
		if r.Running() {
			return r, nil
		}
	}
	return nil, fmt.Errorf("redisproc: %s has no running replica", master.Addr())
}

// waitPromoted waits until the cluster has settled with one of candidates
// as a master.
func (c *Cluster) waitPromoted(ctx context.Context, candidates []*Server) error {
	err := pollFor(ctx, ClusterTimeout, func(ctx context.Context) error {
		if err := c.check(ctx); err != nil {
			return err
		}
		masters, err := c.Masters(ctx)
		if err != nil {
			return err
		}
		for _, m := range candidates {
			if slices.Contains(masters, m) {
				return nil
			}
		}
		return errors.New("no replica promoted yet")
	})
	if err != nil {
		return fmt.Errorf("redisproc: failover: %w", err)
	}
	return nil
}

// clusterView is one node's CLUSTER NODES, sorted by node id.
type clusterView []clusterEntry

// clusterEntry is one line of CLUSTER NODES.
type clusterEntry struct {
	id       string
	port     int
	flagText string
	flags    map[string]bool
	master   string // "-" for a master
	link     string
	slots    []string // "a-b" or "a"; "[...]" entries of migrating slots too
}

func (v clusterView) find(id string) *clusterEntry {
	for i := range v {
		if v[i].id == id {
			return &v[i]
		}
	}
	return nil
}

func (e *clusterEntry) role() string {
	if e.flags["slave"] {
		return "slave"
	}
	return "master"
}

func (e *clusterEntry) serves(slot int) bool {
	for _, r := range e.slots {
		if first, last, ok := parseSlotRange(r); ok && first <= slot && slot <= last {
			return true
		}
	}
	return false
}

// parseSlotRange parses "a-b" or "a"; ok is false for the "[...]" entries
// of slots being migrated.
func parseSlotRange(r string) (first, last int, ok bool) {
	a, b, isRange := strings.Cut(r, "-")
	first, err := strconv.Atoi(a)
	if err != nil {
		return 0, 0, false
	}
	if !isRange {
		return first, first, true
	}
	last, err = strconv.Atoi(b)
	return first, last, err == nil
}

// parseClusterNodes parses a CLUSTER NODES reply:
// <id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...
func parseClusterNodes(s string) (clusterView, error) {
	var v clusterView
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("bad line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		port, err := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
		if err != nil {
			return nil, fmt.Errorf("bad address in %q", line)
		}
		e := clusterEntry{id: f[0], port: port, flagText: f[2], flags: make(map[string]bool), master: f[3], link: f[7], slots: f[8:]}
		for _, fl := range strings.Split(f[2], ",") {
			e.flags[fl] = true
		}
		v = append(v, e)
	}
	slices.SortFunc(v, func(a, b clusterEntry) int { return strings.Compare(a.id, b.id) })
	return v, nil
}

// pollFor is poll bounded by timeout too; f gets the bounded context.
func pollFor(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return poll(ctx, func() error { return f(ctx) })
}

// poll calls f until it returns nil or ctx ends, with a backoff from 10ms
// to 200ms between calls; it returns the last error of f when ctx ends.
func poll(ctx context.Context, f func() error) error {
	backoff := 10 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after %v)", err, context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}
