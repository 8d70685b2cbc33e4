package redispubsub

import (
	"fmt"
	"slices"

	"github.com/ThreeDotsLabs/watermill"
)

// This file moves sharded channels between the connections of a
// Subscriber: out of one when Redis says its slot left the node, into the
// connection of the slot's new owner.

// rehome moves a channel whose slot left c's node (Redis said so with an
// unsolicited SUNSUBSCRIBE or a MOVED, or the node was lost) to the slot's
// new owner. Its subscriptions keep their queues; they resume once the new
// owner confirmed the SSUBSCRIBE. Without a cluster client there is no
// other node to go to: the subscriptions end, with why. Called with mu held.
func (c *connection) rehome(channel, why string) {
	// The last channel may leave: a node connection that carries nothing
	// is closed.
	defer c.s.connectionIdle(c)
	st := c.channels[channel]
	if st == nil {
		return
	}
	if c.s.slots == nil {
		err := fmt.Errorf("%w: channel %q: %s; a Subscriber follows slots only with a *redis.ClusterClient",
			ErrSubscriptionRefused, channel, why)
		c.logger.Error("Sharded channel served by another node; its subscriptions end", err, watermill.LogFields{"channel": channel})
		c.failAll(st, c.waitingFor(st), err)
		delete(c.channels, channel)
		c.forget(st)
		c.dropPending(redisKey{name: channel})
		return
	}
	delete(c.channels, channel)
	moving := c.waitingFor(st)
	for _, sn := range slices.Concat(st.subs, st.starting) {
		if sn.phase != phaseEnded {
			moving = append(moving, sn)
		}
	}
	for _, sn := range moving {
		sn.phase, sn.awaits = phaseNew, nil
	}
	// Nothing of c refers to them any more: another connection's mu guards
	// them from now on.
	c.forget(st)
	c.dropPending(redisKey{name: channel})
	c.s.moves.add(c.s, move{channel: channel, from: c.node, sns: moving, sequences: st.sequences, confirmedMs: st.confirmedMs,
		recovery: st.recovery.moved()})
}

// waitingFor returns the subscriptions of st that wait for the reply to a
// command, written or not. Called with mu held.
func (c *connection) waitingFor(st *channelState) []*subscription {
	if c.sess == nil {
		return nil
	}
	return slices.DeleteFunc(c.sess.waiting(), func(sn *subscription) bool {
		return sn.state != st || sn.phase != phaseWaiting
	})
}

// dropPending cancels a SUBSCRIBE of key not written yet. Called with mu
// held.
func (c *connection) dropPending(key redisKey) {
	sess := c.sess
	if sess == nil {
		return
	}
	if _, queued := sess.pending.ops[key]; queued {
		delete(sess.pending.ops, key)
		if sess.pending.resub[key] {
			delete(sess.pending.resub, key)
			c.resubscribed()
		}
	}
}

// forget removes the subscriptions of st from the commands written or to
// write: st's channel moved to another connection. Called with mu held.
func (c *connection) forget(st *channelState) {
	sess := c.sess
	if sess == nil {
		return
	}
	other := func(sns []*subscription) []*subscription {
		return slices.DeleteFunc(sns, func(sn *subscription) bool { return sn.state == st })
	}
	for _, cmd := range sess.sent {
		for i := range cmd.starters {
			cmd.starters[i] = other(cmd.starters[i])
		}
		cmd.joiners = other(cmd.joiners)
	}
	sess.pending.joiners = other(sess.pending.joiners)
}

// adopt takes over the subscriptions of a channel that moved here: they
// resume at the confirmation of its SUBSCRIBE. It reports false, without
// touching them, when the connection is closed (the Subscriber closed, or
// it closed an idle node connection): the caller asks for a connection
// again, as add's does.
func (c *connection) adopt(m move) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return false
	}
	channel := m.channel
	st := c.channels[channel]
	if st == nil {
		// Messages published while it moved may be lost.
		st = &channelState{name: channel, sequences: m.sequences, confirmedMs: m.confirmedMs, interrupted: m.confirmedMs != 0,
			recovery: m.recovery}
		c.channels[channel] = st
	}
	for _, sn := range m.sns {
		if sn.isDone() {
			continue
		}
		sn.conn.Store(c)
		sn.state, sn.phase, sn.awaits = st, phaseStarting, nil
		st.starting = append(st.starting, sn)
	}
	if len(st.starting) == 0 {
		if st.members() == 0 {
			delete(c.channels, channel)
		}
		return true
	}
	st.subscribed = true
	if c.usable() {
		key := redisKey{name: channel}
		if op, queued := c.sess.pending.ops[key]; queued && !op {
			// The channel's UNSUBSCRIBE was not written: dropped, so that
			// queue asks for a SUBSCRIBE, whose confirmation starts the
			// subscriptions that moved in (Redis confirms a channel
			// subscribed already).
			delete(c.sess.pending.ops, key)
		}
		c.queue(key, true)
	}
	return true
}
