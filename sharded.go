package redispubsub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
)

// slotMap knows which cluster node owns each hash slot, for the Subscriber
// in sharded mode on a cluster.
type slotMap struct {
	cluster *redis.ClusterClient

	mu     sync.Mutex
	owners []string // by slot; nil until loaded
}

const clusterSlots = 16384

func newSlotMap(cluster *redis.ClusterClient) *slotMap { return &slotMap{cluster: cluster} }

// load asks the cluster who owns each slot.
func (m *slotMap) load(ctx context.Context) error {
	ranges, err := m.cluster.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	owners := make([]string, clusterSlots)
	for _, r := range ranges {
		if len(r.Nodes) == 0 {
			continue
		}
		for slot := r.Start; slot <= r.End && slot < clusterSlots; slot++ {
			owners[slot] = r.Nodes[0].Addr
		}
	}
	m.mu.Lock()
	m.owners = owners
	m.mu.Unlock()
	return nil
}

// ensure loads the map unless it was loaded already.
func (m *slotMap) ensure(ctx context.Context) error {
	m.mu.Lock()
	loaded := m.owners != nil
	m.mu.Unlock()
	if loaded {
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
	node := m.owners[hashSlot(channel)]
	if node == "" {
		return "", fmt.Errorf("no node owns the slot of %q", channel)
	}
	return node, nil
}

// hashSlot is Redis Cluster's slot of key: CRC16 of its hash tag (the part
// between the first '{' and the next '}', when not empty) or of the whole
// key, modulo 16384.
func hashSlot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
}

// rehome moves a channel whose slot left c's node (Redis said so with an
// unsolicited SUNSUBSCRIBE or a MOVED) to the slot's new owner. Its
// subscriptions keep their queues; they resume once the new owner confirmed
// the SSUBSCRIBE. Called with c.mu held.
func (s *Subscriber) rehome(c *connection, channel string) {
	st := c.channels[channel]
	if st == nil {
		return
	}
	delete(c.channels, channel)
	sns := slices.Concat(st.subs, st.starting)
	for _, cmd := range c.sent {
		for _, starters := range cmd.starters {
			sns = append(sns, starters...)
		}
		sns = append(sns, cmd.joiners...)
	}
	sns = append(sns, c.pending.joiners...)
	moving := sns[:0]
	for _, sn := range sns {
		if sn.state == st && sn.phase != phaseEnded {
			sn.phase = phaseNew
			moving = append(moving, sn)
		}
	}
	c.logger.Info("Sharded channel moved to another node, following it", watermill.LogFields{
		"channel": channel, "subscriptions": len(moving),
	})
	c.s.wg.Add(1)
	go func() {
		defer c.s.wg.Done()
		s.move(channel, moving, st.sequences)
	}()
}

// move subscribes channel at the owner of its slot after reloading the
// slot map, and hands it the subscriptions.
func (s *Subscriber) move(channel string, sns []*subscription, sequences sequenceTracker) {
	if err := s.slots.load(s.ctx); err != nil {
		s.logger.Error("Cannot reload the cluster's slot map; retrying from the current one", err, nil)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	c, err := s.connectionFor(subscriptionKey{name: strings.TrimPrefix(channel, s.config.ChannelPrefix)})
	s.mu.Unlock()
	if err != nil {
		s.logger.Error("Cannot move a sharded channel", err, watermill.LogFields{"channel": channel})
		return
	}
	c.adopt(channel, sns, sequences)
}

// adopt takes over the subscriptions of a channel that moved here: they
// resume at the confirmation of its SUBSCRIBE.
func (c *connection) adopt(channel string, sns []*subscription, sequences sequenceTracker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.channels[channel]
	if st == nil {
		st = &channelState{name: channel, sequences: sequences}
		c.channels[channel] = st
	}
	for _, sn := range sns {
		if sn.isDone() || c.closed {
			continue
		}
		sn.conn.Store(c)
		sn.state, sn.phase = st, phaseStarting
		st.starting = append(st.starting, sn)
	}
	if len(st.starting) > 0 && c.pubsub != nil {
		st.subscribed = true
		c.queue(redisKey{name: channel}, true)
	}
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
