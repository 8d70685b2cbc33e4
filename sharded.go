package redispubsub

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/hashslot"
)

// slotMap knows which cluster node owns each hash slot, for the Subscriber
// in sharded mode on a cluster.
type slotMap struct {
	cluster *redis.ClusterClient

	// loading is held while the map loads: one CLUSTER SHARDS at a time,
	// however many Subscribes find the map not loaded yet.
	loading sync.Mutex

	mu     sync.Mutex
	owners []string // by slot; nil until loaded
}

func newSlotMap(cluster *redis.ClusterClient) *slotMap { return &slotMap{cluster: cluster} }

// load asks the cluster who owns each slot (CLUSTER SHARDS: the master of
// each shard).
func (m *slotMap) load(ctx context.Context) error {
	shards, err := m.cluster.ClusterShards(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER SHARDS: %w", err)
	}
	owners := make([]string, hashslot.Count)
	for _, shard := range shards {
		addr := ""
		for _, node := range shard.Nodes {
			if node.Role == "master" && node.Health != "fail" {
				host := node.Endpoint
				if host == "" || host == "?" {
					host = node.IP
				}
				port := node.Port
				if port == 0 {
					port = node.TLSPort
				}
				addr = net.JoinHostPort(host, strconv.FormatInt(port, 10))
			}
		}
		if addr == "" {
			continue
		}
		for _, r := range shard.Slots {
			for slot := r.Start; slot <= r.End && slot < hashslot.Count; slot++ {
				owners[slot] = addr
			}
		}
	}
	m.mu.Lock()
	m.owners = owners
	m.mu.Unlock()
	return nil
}

// ensure loads the map unless it was loaded already (by another caller
// meanwhile, too).
func (m *slotMap) ensure(ctx context.Context) error {
	loaded := func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.owners != nil
	}
	if loaded() {
		return nil
	}
	m.loading.Lock()
	defer m.loading.Unlock()
	if loaded() {
		return nil
	}
	return m.load(ctx)
}

// owner returns the node that owns channel's slot, and a client for it.
func (m *slotMap) owner(channel string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owners == nil {
		return "", fmt.Errorf("the cluster's slot map is not loaded")
	}
	node := m.owners[hashslot.Of(channel)]
	if node == "" {
		return "", fmt.Errorf("no node owns the slot of %q", channel)
	}
	return node, nil
}

// move is a channel on its way to another node.
type move struct {
	channel, from string
	sns           []*subscription
	sequences     sequenceTracker
	confirmedMs   int64
	recovery      *channelRecovery
}

// mover moves channels to their new nodes, with one reload of the slot map
// for all the channels that moved together (a migrated slot, a lost node).
type mover struct {
	mu      sync.Mutex
	pending []move
	running bool
}

// add queues m, and starts the goroutine that moves the queue unless it
// runs.
func (mv *mover) add(s *Subscriber, m move) {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	mv.pending = append(mv.pending, m)
	if !mv.running {
		mv.running = true
		s.wg.Add(1)
		go mv.run(s)
	}
}

func (mv *mover) run(s *Subscriber) {
	defer s.wg.Done()
	for {
		mv.mu.Lock()
		batch := mv.pending
		mv.pending = nil
		if len(batch) == 0 {
			mv.running = false
			mv.mu.Unlock()
			return
		}
		mv.mu.Unlock()
		if err := s.slots.load(s.ctx); err != nil {
			s.logger.Error("Cannot reload the cluster's slot map; moving by the current one", err, nil)
		}
		moved := map[string]int{}
		for _, m := range batch {
			if s.moveTo(m) {
				moved[m.from]++
			}
		}
		for from, n := range moved {
			s.logger.Info("Sharded channels moved to another node, following them", watermill.LogFields{
				"from": from, "channels": n,
			})
		}
	}
}

// moveTo subscribes m's channel at the owner of its slot and hands it the
// subscriptions. It reports false when the Subscriber is closed.
func (s *Subscriber) moveTo(m move) bool {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			for _, sn := range m.sns {
				sn.end()
			}
			return false
		}
		c, err := s.connectionFor(subscriptionKey{name: strings.TrimPrefix(m.channel, s.config.ChannelPrefix)})
		s.mu.Unlock()
		if err != nil {
			s.logger.Error("Cannot move a sharded channel; its subscriptions end", err, watermill.LogFields{"channel": m.channel})
			for _, sn := range m.sns {
				sn.end()
			}
			return false
		}
		if c.adopt(m) {
			return true
		}
		// c was closed meanwhile (idle, or the Subscriber closing): ask
		// again.
	}
}

// followSlots reloads the slot map after c lost its node, and moves the
// channels whose slot another node owns now (a replica was promoted). It
// reports whether c still has channels to reconnect for; when it has none,
// it is closed.
func (s *Subscriber) followSlots(c *connection) bool {
	if err := s.slots.load(s.ctx); err != nil {
		c.logger.Debug("Cannot reload the cluster's slot map", watermill.LogFields{"err": err.Error()})
	}
	c.mu.Lock()
	for name := range c.channels {
		if owner, err := s.slots.owner(name); err == nil && owner != c.node {
			c.rehome(name, "its slot's node was lost; another node owns it now")
		}
	}
	empty := len(c.channels) == 0
	c.mu.Unlock()
	if empty {
		s.closeIfIdle(c)
	}
	return !c.isClosed()
}

// closeIfIdle closes a node connection that carries nothing any more.
func (s *Subscriber) closeIfIdle(c *connection) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.mu.Lock()
	idle := c.empty()
	c.mu.Unlock()
	if idle && s.conns[c.node] == c {
		delete(s.conns, c.node)
		c.close()
	}
}

// nameInNode returns base followed by ":{<tag>}", a hash tag chosen so that
// the name's slot is one node owns; ok is false when none was found (base
// holds a hash tag of its own in another node's slot, or node owns no slot).
func (m *slotMap) nameInNode(base, node string) (name string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owners == nil {
		return "", false
	}
	for i := range probeTagAttempts {
		name = base + ":{" + strconv.Itoa(i) + "}"
		if m.owners[hashslot.Of(name)] == node {
			return name, true
		}
	}
	return "", false
}
