package redispubsub

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
)

var (
	errHealthCheck     = errors.New("redispubsub: no bytes and no answer to PING within the health-check interval")
	errUnexpectedReply = errors.New("redispubsub: reply to a command this connection did not send")
)

// connection is one Redis Pub/Sub connection of a Subscriber. It owns the
// socket, the commands written on it and the replies Redis owes for them,
// the Redis subscriptions (channels and patterns) it carries, their
// resubscription after a reconnect, and the health check. A Subscriber in
// classic mode has one; in sharded mode, one per cluster node that owns the
// slot of a subscribed channel.
//
//	dialing ──PING written──> resubscribing ──every resubscription confirmed──> live
//	  ^   │                         │                                           │
//	  │   └─dial failed: backoff──┐ │                                           │
//	  └───────────────────────────┴─┴─ read/write error, silence, desync ───────┘
//	closed: from any state, when the Subscriber closes (or, sharded, when the
//	connection carries no channel any more)
//
// Two goroutines serve a connection: the reader (run) dials, reads every
// reply and routes messages without ever waiting for a consumer; the writer
// (write) writes every command, in the order of the replies the reader
// expects, and checks health. Neither holds mu while on the socket.
type connection struct {
	s      *Subscriber
	node   string // the cluster node's address in sharded mode, else ""
	client *pubsubClient
	logger watermill.LoggerAdapter

	mu       sync.Mutex
	channels map[string]*channelState // by Redis channel
	patterns map[string]*channelState // by Redis pattern
	pubsub   *redis.PubSub            // nil while dialing
	broken   error                    // why this side closed pubsub, if it did
	sent     []*command               // written and owing replies, oldest first
	pending  pendingCommands          // to write
	wake     chan struct{}            // capacity 1: pending is not empty
	// awaiting counts the resubscriptions owed on this connection; live is
	// set once there are none.
	awaiting  int
	live      bool
	reconnect *pendingReconnect
	// dialErr is the error of the last failed connection attempt, cleared by
	// a successful one; permanent is set when retrying cannot heal it.
	dialErr   error
	permanent bool
	// sending is set while the writer writes the commands take returned;
	// take returns none once the connection is broken or closed.
	sending bool
	// closed ends the connection for good; stop is closed with it, to end
	// the backoff between connection attempts.
	closed   bool
	stop     chan struct{}
	stopOnce sync.Once
}

// channelState is one Redis subscription (a channel or a pattern) and the
// local subscriptions that share it.
type channelState struct {
	name    string
	pattern bool
	// subs receive the channel's messages. starting ones start at the
	// confirmation of the SUBSCRIBE queued for the channel (or of its
	// resubscription); waiting counts those whose command was written and
	// not answered yet (their SUBSCRIBE's confirmation, or a PING's PONG).
	subs     []*subscription
	starting []*subscription
	waiting  int
	// subscribed is set when the last command queued or written for the
	// channel is a SUBSCRIBE.
	subscribed bool
	// refused is set when Redis refused the channel's SUBSCRIBE.
	refused error
	// sequences finds the gaps in what this Redis subscription received;
	// confirmedMs is when Redis first confirmed it, and interrupted is set
	// once a connection was lost since: the start of a stream may then have
	// been lost.
	sequences   sequenceTracker
	confirmedMs int64 // Unix milliseconds; 0: not yet
	interrupted bool
}

func (st *channelState) members() int { return len(st.subs) + len(st.starting) + st.waiting }

// commandKind is what a command asks of Redis.
type commandKind uint8

const (
	cmdPing commandKind = iota
	cmdSubscribe
	cmdUnsubscribe
)

// command is one command written on the connection, owing replies.
type command struct {
	kind    commandKind
	pattern bool
	names   []string
	// cmdSubscribe: per name, the subscriptions that start at its
	// confirmation, and whether it resubscribes after a reconnect.
	starters [][]*subscription
	resub    []bool
	// cmdPing: the subscriptions that start at its PONG.
	joiners []*subscription
	replied int // confirmations received
}

// replyKind is the kind of the confirmations Redis sends for cmd.
func (cmd *command) replyKind(sharded bool) string {
	switch {
	case cmd.kind == cmdSubscribe && cmd.pattern:
		return "psubscribe"
	case cmd.kind == cmdSubscribe && sharded:
		return "ssubscribe"
	case cmd.kind == cmdSubscribe:
		return "subscribe"
	case cmd.kind == cmdUnsubscribe && cmd.pattern:
		return "punsubscribe"
	case cmd.kind == cmdUnsubscribe && sharded:
		return "sunsubscribe"
	case cmd.kind == cmdUnsubscribe:
		return "unsubscribe"
	}
	return "pong"
}

// redisKey names a Redis subscription: a channel or a pattern.
type redisKey struct {
	name    string
	pattern bool
}

// pendingCommands are the changes to write on the next occasion. A
// SUBSCRIBE and an UNSUBSCRIBE of the same channel cancel each other out.
type pendingCommands struct {
	order []redisKey
	ops   map[redisKey]bool // true: SUBSCRIBE, false: UNSUBSCRIBE
	resub map[redisKey]bool // SUBSCRIBEs that resubscribe after a reconnect
	// alone holds the channels to subscribe in a command of their own:
	// Redis refused a command that had them with others.
	alone map[redisKey]bool
	// joiners start at the PONG of the next PING; ping asks for a PING of
	// the health check.
	joiners []*subscription
	ping    bool
}

func newPendingCommands() pendingCommands {
	return pendingCommands{ops: make(map[redisKey]bool), resub: make(map[redisKey]bool), alone: make(map[redisKey]bool)}
}

func (p *pendingCommands) empty() bool { return len(p.ops) == 0 && len(p.joiners) == 0 && !p.ping }

// maxNamesPerCommand bounds the channels of one SUBSCRIBE or UNSUBSCRIBE.
const maxNamesPerCommand = 1000

func newConnection(s *Subscriber, node string, client *pubsubClient) *connection {
	c := &connection{
		s:        s,
		node:     node,
		client:   client,
		logger:   s.logger,
		channels: make(map[string]*channelState),
		patterns: make(map[string]*channelState),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	c.pending = newPendingCommands()
	if node != "" {
		c.logger = s.logger.With(watermill.LogFields{"node": node})
	}
	s.wg.Add(1)
	go c.run()
	return c
}

// table returns the map of the Redis subscriptions of key's kind. Called
// with mu held.
func (c *connection) table(pattern bool) map[string]*channelState {
	if pattern {
		return c.patterns
	}
	return c.channels
}

// add registers sn, which listens to the Redis channel or pattern name, and
// arranges for it to start at the reply to a command written after this
// call: the confirmation of the SUBSCRIBE it causes, or of the one already
// queued, or else the PONG of the next PING. Messages that Redis sent before
// it was called are never its. sn.ready is closed when it starts or fails.
// It reports false, without touching sn, when the connection is closed:
// the Subscriber closed, or (sharded) it closed an idle node connection; the
// caller then asks for a connection again.
func (c *connection) add(sn *subscription, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sn.isDone() {
		return true // ended before it was added
	}
	if c.closed {
		return false
	}
	if c.permanent {
		sn.fail(c.dialError())
		return true
	}
	key := redisKey{name, sn.key.pattern}
	table := c.table(key.pattern)
	st := table[name]
	if st == nil {
		st = &channelState{name: name, pattern: key.pattern}
		table[name] = st
	}
	sn.state = st
	sn.conn.Store(c)
	op, queued := c.pending.ops[key]
	switch {
	case c.pubsub == nil:
		// Everything starts with the resubscription.
		sn.phase = phaseStarting
		st.starting = append(st.starting, sn)
		st.subscribed = true
	case queued && op:
		sn.phase = phaseStarting
		st.starting = append(st.starting, sn)
	case queued && !op:
		// Its UNSUBSCRIBE was not written: the channel stays subscribed.
		delete(c.pending.ops, key)
		st.subscribed = true
		c.join(st, sn)
	case !st.subscribed:
		if st.members() == 0 {
			st.sequences = nil // nothing was missed while nobody listened
		}
		sn.phase = phaseStarting
		st.starting = append(st.starting, sn)
		st.subscribed = true
		c.queue(key, true)
	default:
		c.join(st, sn)
	}
	return true
}

// join makes sn start at the PONG of the next PING. Called with mu held.
func (c *connection) join(st *channelState, sn *subscription) {
	sn.phase = phaseWaiting
	st.waiting++
	c.pending.joiners = append(c.pending.joiners, sn)
	c.signal()
}

// queue asks for a SUBSCRIBE (subscribe) or UNSUBSCRIBE of key, cancelling
// the opposite one if it was not written yet. Called with mu held.
func (c *connection) queue(key redisKey, subscribe bool) {
	if op, ok := c.pending.ops[key]; ok {
		if op != subscribe {
			delete(c.pending.ops, key)
			if c.pending.resub[key] {
				delete(c.pending.resub, key)
				c.resubscribed()
			}
		}
		return
	}
	c.pending.ops[key] = subscribe
	c.pending.order = append(c.pending.order, key)
	c.signal()
}

func (c *connection) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// remove takes an ended subscription out of its Redis subscription, and
// unsubscribes in Redis when it was the last.
func (c *connection) remove(sn *subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sn.connection() != c {
		// It moved to another node meanwhile: the caller tries again.
		return
	}
	st := sn.state
	switch sn.phase {
	case phaseStarting:
		st.starting = slices.DeleteFunc(st.starting, func(o *subscription) bool { return o == sn })
	case phaseWaiting:
		st.waiting--
	case phaseActive:
		st.subs = slices.DeleteFunc(st.subs, func(o *subscription) bool { return o == sn })
	default:
		return
	}
	sn.phase = phaseEnded
	if st.members() > 0 {
		return
	}
	table := c.table(st.pattern)
	if table[st.name] == st {
		delete(table, st.name)
	}
	if st.subscribed && !c.closed {
		st.subscribed = false
		if c.pubsub != nil {
			c.queue(redisKey{st.name, st.pattern}, false)
		}
	}
	c.s.connectionIdle(c)
}

// subscriptions returns every subscription the connection carries, started
// or waiting. Called with mu held.
func (c *connection) subscriptions() []*subscription {
	var sns []*subscription
	for _, table := range []map[string]*channelState{c.channels, c.patterns} {
		for _, st := range table {
			sns = append(sns, st.subs...)
			sns = append(sns, st.starting...)
		}
	}
	for _, cmd := range c.sent {
		for _, starters := range cmd.starters {
			sns = append(sns, starters...)
		}
		sns = append(sns, cmd.joiners...)
	}
	return append(sns, c.pending.joiners...)
}

// empty reports whether the connection carries no Redis subscription and
// owes no reply. Called with mu held.
func (c *connection) empty() bool {
	return len(c.channels) == 0 && len(c.patterns) == 0 && len(c.sent) == 0 && c.pending.empty()
}

// close ends the connection for good, and every subscription it carries.
func (c *connection) close() {
	c.mu.Lock()
	c.closed = true
	ps, sending := c.pubsub, c.sending
	for _, sn := range c.subscriptions() {
		sn.end()
	}
	c.mu.Unlock()
	c.stopOnce.Do(func() { close(c.stop) })
	if sending {
		// PubSub.Close waits for the command being written, which a
		// socket that takes no more bytes holds: close the socket first.
		c.client.abort()
	}
	if ps != nil {
		_ = ps.Close()
	}
}

// run dials, reads until the connection breaks, and starts over with
// backoff until the connection is closed.
func (c *connection) run() {
	defer c.s.wg.Done()
	defer c.client.close()
	var (
		lost     error
		lostAt   time.Time
		attempts int
		backoff  = c.s.config.ReconnectBackoffMin
	)
	for {
		attempts++
		ps, err := c.dial(lost, lostAt, attempts)
		if err == nil {
			backoff = c.s.config.ReconnectBackoffMin
			err = c.serve(ps)
			established := c.disconnect(ps, err)
			if c.isClosed() {
				return
			}
			// A connection whose resubscription Redis never confirmed
			// does not end the downtime.
			if established {
				lost, lostAt, attempts = err, time.Now(), 0
			}
			c.logger.Error("Redis Pub/Sub connection lost, reconnecting", err, nil)
		} else if c.isClosed() {
			return
		} else {
			c.logger.Error("Cannot connect to Redis Pub/Sub, retrying", err, watermill.LogFields{
				"attempt": attempts, "backoff": backoff.String(),
			})
		}
		if !c.sleep(jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, c.s.config.ReconnectBackoffMax)
		if c.node != "" && !c.s.followSlots(c) {
			return // every channel moved to another node
		}
	}
}

func (c *connection) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// sleep waits for d unless the connection closes first.
func (c *connection) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.stop:
		return false
	}
}

// jitter spreads reconnects of many subscribers: d ± 20%.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}

// dial opens a connection and queues the resubscription of every channel and
// pattern that has subscriptions. When lost is set, the reconnect is
// reported once Redis confirmed them all.
func (c *connection) dial(lost error, lostAt time.Time, attempts int) (*redis.PubSub, error) {
	ps := c.client.open(c.s.ctx)
	// A PING dials, outside mu; its PONG is read like any reply.
	if err := ps.Ping(c.s.ctx); err != nil {
		_ = ps.Close()
		c.dialFailed(err)
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = ps.Close()
		return nil, ErrSubscriberClosed
	}
	c.pubsub, c.broken, c.dialErr, c.permanent = ps, nil, nil, false
	c.sent = append(c.sent[:0], &command{kind: cmdPing})
	c.pending = newPendingCommands()
	topics, patterns := 0, 0
	for _, pattern := range []bool{false, true} {
		table := c.table(pattern)
		names := make([]string, 0, len(table))
		for name, st := range table {
			if st.members() == 0 {
				delete(table, name)
				continue
			}
			st.subscribed = true
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			key := redisKey{name, pattern}
			c.pending.ops[key] = true
			c.pending.resub[key] = true
			c.pending.order = append(c.pending.order, key)
		}
		if pattern {
			patterns = len(names)
		} else {
			topics = len(names)
		}
	}
	c.awaiting = topics + patterns
	if lost != nil {
		c.reconnect = &pendingReconnect{
			event:  ReconnectEvent{Cause: lost, Attempts: attempts, Topics: topics, Patterns: patterns, Node: c.node},
			lostAt: lostAt,
		}
	}
	c.established()
	c.signal()
	return ps, nil
}

// dialFailed records why a connection attempt failed. When retrying cannot
// heal the cause (a wrong password, a refused certificate), the
// subscriptions waiting for the connection fail at once with it.
func (c *connection) dialFailed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dialErr, c.permanent = err, isPermanent(err)
	if !c.permanent {
		return
	}
	failed := c.dialError()
	for _, table := range []map[string]*channelState{c.channels, c.patterns} {
		for _, st := range table {
			for _, sn := range st.starting {
				sn.phase = phaseEnded
				sn.fail(failed)
			}
			st.starting = nil
			if st.members() == 0 {
				delete(table, st.name)
			}
		}
	}
}

// dialError describes the last failed connection attempt. Called with mu
// held.
func (c *connection) dialError() error {
	if c.permanent {
		return fmt.Errorf("%w: %w", ErrConnectionRefused, c.dialErr)
	}
	return c.dialErr
}

// pendingReconnect is a reconnect to report once resubscribed.
type pendingReconnect struct {
	event  ReconnectEvent
	lostAt time.Time
}

// resubscribed counts one resubscription confirmed (or no longer wanted).
// Called with mu held.
func (c *connection) resubscribed() {
	c.awaiting--
	c.established()
}

// established marks the connection live once no resubscription is owed,
// and reports the reconnect, if any. Called with mu held.
func (c *connection) established() {
	if c.awaiting > 0 || c.live {
		return
	}
	c.live = true
	if r := c.reconnect; r != nil {
		c.reconnect = nil
		c.s.reportReconnect(r)
	}
}

// disconnect closes a connection that serve gave up on, and readies every
// Redis subscription for the next one: the subscriptions waiting for a reply
// that will never come wait for the resubscription instead. It reports
// whether the connection had been live.
func (c *connection) disconnect(ps *redis.PubSub, cause error) (wasLive bool) {
	c.mu.Lock()
	wasLive = c.live
	c.live, c.awaiting, c.reconnect = false, 0, nil
	if c.pubsub == ps {
		c.pubsub = nil
	}
	for _, table := range []map[string]*channelState{c.channels, c.patterns} {
		for _, st := range table {
			st.interrupted = st.confirmedMs != 0
		}
	}
	for _, cmd := range c.sent {
		for _, sns := range cmd.starters {
			c.restart(sns)
		}
		c.restart(cmd.joiners)
	}
	c.restart(c.pending.joiners)
	c.sent = nil
	c.pending = newPendingCommands()
	c.mu.Unlock()
	_ = ps.Close()
	return wasLive
}

// restart moves subscriptions that waited for a reply on a lost connection
// to the resubscription of their channel. Called with mu held.
func (c *connection) restart(sns []*subscription) {
	for _, sn := range sns {
		if sn.phase != phaseWaiting {
			continue
		}
		sn.phase, sn.awaits = phaseStarting, nil
		sn.state.waiting--
		sn.state.starting = append(sn.state.starting, sn)
	}
}

// restartJoiners moves the subscriptions of st that wait for a PING's PONG
// to its next SUBSCRIBE. Called with mu held.
func (c *connection) restartJoiners(st *channelState) {
	of := func(sns []*subscription) []*subscription {
		var mine []*subscription
		for _, sn := range sns {
			if sn.state == st && sn.phase == phaseWaiting {
				mine = append(mine, sn)
			}
		}
		return mine
	}
	for _, cmd := range c.sent {
		if cmd.kind == cmdPing {
			c.restart(of(cmd.joiners))
		}
	}
	c.restart(of(c.pending.joiners))
}

// forget removes the subscriptions of st from the commands written or to
// write: st's channel moved to another connection. Called with mu held.
func (c *connection) forget(st *channelState) {
	other := func(sns []*subscription) []*subscription {
		return slices.DeleteFunc(sns, func(sn *subscription) bool { return sn.state == st })
	}
	for _, cmd := range c.sent {
		for i := range cmd.starters {
			cmd.starters[i] = other(cmd.starters[i])
		}
		cmd.joiners = other(cmd.joiners)
	}
	c.pending.joiners = other(c.pending.joiners)
}

// fault closes ps because of err, unless it broke already. The reader then
// ends with err as the cause. Called with mu held.
func (c *connection) fault(ps *redis.PubSub, err error) {
	if c.pubsub != ps || c.broken != nil {
		return
	}
	c.broken = err
	if c.sending {
		// PubSub.Close waits for the command being written, which a
		// socket that takes no more bytes holds: close the socket first.
		c.client.abort()
	}
	_ = ps.Close()
}
