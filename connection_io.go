package redispubsub

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/hashslot"
)

// serve runs the writer and the health check, and reads the connection
// until it fails, never blocking on consumers. It sets no read deadline (one
// that expired in the middle of a large message would desynchronise the
// stream); the health check closes a silent connection instead.
func (c *connection) serve(ps *redis.PubSub) error {
	stop := make(chan struct{})
	var helpers sync.WaitGroup
	helpers.Add(2)
	go func() {
		defer helpers.Done()
		c.write(ps, stop)
	}()
	go func() {
		defer helpers.Done()
		c.watch(ps, stop)
	}()
	defer func() {
		close(stop)
		c.mu.Lock()
		if c.sending {
			// A command still being written on a socket that takes
			// no more bytes must not hold the writer.
			c.client.abort()
		}
		c.mu.Unlock()
		helpers.Wait()
	}()
	for {
		reply, err := ps.Receive(c.s.ctx)
		c.client.activity.Add(1)
		if err != nil {
			var redisErr redis.Error
			if errors.As(err, &redisErr) && c.s.ctx.Err() == nil {
				c.refused(ps, err)
				continue
			}
			c.mu.Lock()
			broken := c.broken
			c.mu.Unlock()
			switch {
			case c.s.ctx.Err() != nil:
				return c.s.ctx.Err()
			case broken != nil:
				return broken
			}
			return err
		}
		switch reply := reply.(type) {
		case *redis.Message:
			c.s.route(c, reply)
		case *redis.Subscription:
			c.confirm(ps, reply)
		case *redis.Pong:
			c.pong(ps)
		default:
			c.logger.Info("Unexpected Pub/Sub reply ignored", watermill.LogFields{"reply": fmt.Sprintf("%T", reply)})
		}
	}
}

// write writes the pending commands whenever there are some.
func (c *connection) write(ps *redis.PubSub, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-c.wake:
		}
		cmds := c.take(ps)
		for _, cmd := range cmds {
			if err := c.send(ps, cmd); err != nil {
				c.mu.Lock()
				c.sending = false
				c.fault(ps, fmt.Errorf("%s: %w", cmd.replyKind(c.s.config.Sharded), err))
				c.mu.Unlock()
				return
			}
		}
		if len(cmds) > 0 {
			c.mu.Lock()
			c.sending = false
			c.mu.Unlock()
		}
	}
}

// watch checks the connection's health every quarter of the health-check
// interval: after a quarter without a byte read it has a PING sent; after
// three in a row it closes the connection. So a connection that stopped
// answering is dropped after between 3/4 and 1 HealthCheckInterval of
// silence, and a PONG has at least half of it to come back. It runs apart
// from the writer, so that a command blocked on a socket that takes no more
// bytes does not stop it.
func (c *connection) watch(ps *redis.PubSub, stop <-chan struct{}) {
	ticker := time.NewTicker(c.s.config.HealthCheckInterval / 4)
	defer ticker.Stop()
	seen, silent := c.client.activity.Load(), 0
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		if now := c.client.activity.Load(); now != seen {
			seen, silent = now, 0
			continue
		}
		silent++
		c.mu.Lock()
		if silent >= 3 {
			c.fault(ps, errHealthCheck)
			c.mu.Unlock()
			return
		}
		if silent == 1 {
			c.pending.ping = true
			c.signal()
		}
		c.mu.Unlock()
	}
}

// take turns the pending changes into commands and records them as sent,
// in the order they are to be written. Called by the writer.
func (c *connection) take(ps *redis.PubSub) []*command {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pubsub != ps || c.broken != nil || c.closed || c.pending.empty() {
		return nil
	}
	var cmds []*command
	// The command being filled per kind (SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE,
	// PUNSUBSCRIBE) and, in sharded mode, per hash slot: Redis refuses an
	// SSUBSCRIBE or SUNSUBSCRIBE whose channels are in different slots.
	type batchKey struct{ kind, slot int }
	batch := make(map[batchKey]*command)
	sharded := c.s.config.Sharded
	for _, key := range c.pending.order {
		subscribe, ok := c.pending.ops[key]
		if !ok {
			continue // cancelled, or taken already
		}
		delete(c.pending.ops, key)
		bk := batchKey{}
		if key.pattern {
			bk.kind++
		}
		if !subscribe {
			bk.kind += 2
		}
		if sharded {
			bk.slot = hashslot.Of(key.name)
		}
		cmd := batch[bk]
		alone := c.pending.alone[key]
		if cmd == nil || len(cmd.names) == maxNamesPerCommand || alone {
			cmd = &command{kind: cmdUnsubscribe, pattern: key.pattern}
			if subscribe {
				cmd.kind = cmdSubscribe
			}
			cmds = append(cmds, cmd)
			if alone {
				delete(c.pending.alone, key)
			} else {
				batch[bk] = cmd
			}
		}
		cmd.names = append(cmd.names, key.name)
		if !subscribe {
			continue
		}
		st := c.table(key.pattern)[key.name]
		var starters []*subscription
		if st != nil {
			starters = st.starting
			st.starting = nil
			for _, sn := range starters {
				sn.phase, sn.awaits = phaseWaiting, cmd
			}
			st.waiting += len(starters)
		}
		cmd.starters = append(cmd.starters, starters)
		cmd.resub = append(cmd.resub, c.pending.resub[key])
		delete(c.pending.resub, key)
	}
	c.pending.order = c.pending.order[:0]
	if len(c.pending.joiners) > 0 || c.pending.ping {
		ping := &command{kind: cmdPing, joiners: c.pending.joiners}
		for _, sn := range ping.joiners {
			if sn.phase == phaseWaiting && sn.awaits == nil {
				sn.awaits = ping
			}
		}
		cmds = append(cmds, ping)
		c.pending.joiners, c.pending.ping = nil, false
	}
	c.sent = append(c.sent, cmds...)
	c.sending = len(cmds) > 0
	return cmds
}

// send writes one command.
func (c *connection) send(ps *redis.PubSub, cmd *command) error {
	ctx := c.s.ctx
	sharded := c.s.config.Sharded
	switch {
	case cmd.kind == cmdPing:
		return ps.Ping(ctx)
	case cmd.kind == cmdSubscribe && cmd.pattern:
		return ps.PSubscribe(ctx, cmd.names...)
	case cmd.kind == cmdSubscribe && sharded:
		return ps.SSubscribe(ctx, cmd.names...)
	case cmd.kind == cmdSubscribe:
		return ps.Subscribe(ctx, cmd.names...)
	case cmd.pattern:
		return ps.PUnsubscribe(ctx, cmd.names...)
	case sharded:
		return ps.SUnsubscribe(ctx, cmd.names...)
	default:
		return ps.Unsubscribe(ctx, cmd.names...)
	}
}

// confirm matches a (un)subscribe confirmation with the oldest command that
// owes one, and starts the subscriptions waiting for it.
func (c *connection) confirm(ps *redis.PubSub, reply *redis.Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sharded := c.s.config.Sharded
	if len(c.sent) == 0 || c.sent[0].replyKind(sharded) != reply.Kind || c.sent[0].names[c.sent[0].replied] != reply.Channel {
		if reply.Kind == "sunsubscribe" && sharded {
			// Redis moved the channel's slot away (or the node was
			// demoted): the channel is to be subscribed at its new owner.
			c.s.rehome(c, reply.Channel)
			return
		}
		// Not a reply this connection owes: go-redis reconnected and
		// resubscribed behind our back (it does so on a server's MOVING
		// notification). Start over, so that every count is right again.
		c.fault(ps, fmt.Errorf("%w: %s %s", errUnexpectedReply, reply.Kind, reply.Channel))
		return
	}
	cmd := c.sent[0]
	i := cmd.replied
	cmd.replied++
	if cmd.replied == len(cmd.names) {
		c.sent = c.sent[1:]
	}
	st := c.table(cmd.pattern)[reply.Channel]
	if cmd.kind != cmdSubscribe {
		if st != nil {
			// The stream breaks here: what is published until the next
			// SUBSCRIBE is confirmed is not missed, nobody listened.
			st.sequences, st.confirmedMs, st.interrupted = nil, 0, false
		}
		c.s.connectionIdle(c)
		return
	}
	if st != nil {
		st.refused = nil
	}
	if st != nil && st.confirmedMs == 0 {
		st.confirmedMs = time.Now().UnixMilli()
	}
	if st != nil {
		c.start(st, cmd, cmd.starters[i])
	}
	cmd.starters[i] = nil
	if cmd.resub[i] {
		c.resubscribed()
	}
}

// pong starts the subscriptions that waited for the PONG of the oldest
// command, a PING.
func (c *connection) pong(ps *redis.PubSub) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sent) == 0 || c.sent[0].kind != cmdPing {
		c.fault(ps, fmt.Errorf("%w: PONG", errUnexpectedReply))
		return
	}
	cmd := c.sent[0]
	c.sent = c.sent[1:]
	for _, sn := range cmd.joiners {
		switch {
		case sn.phase != phaseWaiting || sn.awaits != cmd:
		case sn.state.refused != nil:
			// It joined a SUBSCRIBE that Redis refused.
			sn.state.waiting--
			sn.phase = phaseEnded
			sn.fail(sn.state.refused)
			if sn.state.members() == 0 && c.table(sn.state.pattern)[sn.state.name] == sn.state {
				delete(c.table(sn.state.pattern), sn.state.name)
			}
		default:
			c.start(sn.state, cmd, []*subscription{sn})
		}
	}
}

// start makes the subscriptions of st that wait for cmd's reply receive its
// messages from now on.
// Called with mu held.
func (c *connection) start(st *channelState, cmd *command, sns []*subscription) {
	for _, sn := range sns {
		if sn.phase != phaseWaiting || sn.awaits != cmd {
			continue // ended meanwhile, or waits for a later command now
		}
		sn.phase, sn.awaits = phaseActive, nil
		st.waiting--
		st.subs = append(st.subs, sn)
		sn.started()
	}
}

// refused handles an error reply, which answers the oldest command in place
// of all its confirmations. A SUBSCRIBE of several channels is sent again
// one channel at a time (Redis refuses the whole command for one refused
// channel); a refused single channel fails its subscriptions, wrapping
// ErrSubscriptionRefused; the other channels go on.
func (c *connection) refused(ps *redis.PubSub, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sent) == 0 || c.sent[0].kind == cmdPing || c.sent[0].replied > 0 {
		c.fault(ps, fmt.Errorf("%w: error %v", errUnexpectedReply, err))
		return
	}
	cmd := c.sent[0]
	c.sent = c.sent[1:]
	if cmd.kind == cmdUnsubscribe {
		c.logger.Error("Redis refused an UNSUBSCRIBE", err, watermill.LogFields{"channels": strings.Join(cmd.names, " ")})
		return
	}
	if c.s.config.Sharded && isMoved(err) {
		for i, name := range cmd.names {
			c.restart(cmd.starters[i])
			c.s.rehome(c, name)
			if cmd.resub[i] {
				c.resubscribed()
			}
		}
		return
	}
	for i, name := range cmd.names {
		key := redisKey{name, cmd.pattern}
		st := c.table(cmd.pattern)[name]
		if len(cmd.names) > 1 {
			// Again, alone. Those that joined it with a PING start with
			// the new SUBSCRIBE too: the PONG comes before it.
			c.restart(cmd.starters[i])
			if st != nil {
				c.restartJoiners(st)
			}
			if st != nil && st.members() > 0 {
				c.pending.ops[key] = true
				c.pending.alone[key] = true
				c.pending.order = append(c.pending.order, key)
				if cmd.resub[i] {
					c.pending.resub[key] = true
				}
			} else if cmd.resub[i] {
				c.resubscribed()
			}
			continue
		}
		what := "channel"
		if cmd.pattern {
			what = "pattern"
		}
		failed := fmt.Errorf("%w: %s %q: %w", ErrSubscriptionRefused, what, name, err)
		c.logger.Error("Redis refused a subscription; its subscriptions end", err, watermill.LogFields{what: name})
		if st != nil {
			c.failAll(st, cmd.starters[i], failed)
		}
		if cmd.resub[i] {
			if r := c.reconnect; r != nil {
				r.event.Refused++
				if cmd.pattern {
					r.event.Patterns--
				} else {
					r.event.Topics--
				}
			}
			c.resubscribed()
		}
	}
	c.signal()
}

// failAll ends every subscription of st, and those that waited for a refused
// command, with err. Called with mu held.
func (c *connection) failAll(st *channelState, waiting []*subscription, err error) {
	for _, sn := range slices.Concat(st.subs, st.starting, waiting) {
		if sn.phase == phaseEnded {
			continue
		}
		if sn.phase == phaseWaiting {
			st.waiting--
		}
		sn.phase = phaseEnded
		sn.fail(err)
	}
	st.subs, st.starting = nil, nil
	st.subscribed, st.refused = false, err
	if st.members() == 0 {
		delete(c.table(st.pattern), st.name)
	}
}
