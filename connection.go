package redispubsub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

var (
	errHealthCheck     = errors.New("redispubsub: no bytes and no answer to PING for a whole health-check interval")
	errUnexpectedReply = errors.New("redispubsub: reply to a command this connection did not send")
)

// connection is one Redis Pub/Sub connection of a Subscriber. It owns the
// socket (opened by dial, see socket.go, then read and written by this file
// and connection_io.go alone), the commands written on it and the replies
// Redis owes for them, the Redis subscriptions (channels and patterns) it
// carries, their resubscription after a reconnect, and the health check. A
// Subscriber in classic mode has one; in sharded mode on a cluster, one per
// node that owns the slot of a subscribed channel.
//
// Its state is one value, changed only by setState, which checks the
// transition:
//
//	          ┌──── attempt failed: backoff ────┐
//	          v                                 │
//	      dialing ──── refused for good ───> refused (Subscribes fail at once;
//	         │ ^                                │     retried with backoff)
//	socket up│ └──── attempt failed ────────────┤
//	         v                                  │ socket up
//	   subscribing <────────────────────────────┘
//	         │ every resubscription confirmed
//	         v
//	       live
//	subscribing, live ── this side dropped the socket (silence, desync) ──> broken
//	subscribing, live, broken ── the reader stopped: session dropped ──> dialing
//	any state ── Close (or, sharded, nothing left to carry) ──> closed
//
// A session holds what lives and dies with one socket; dial creates it and
// disconnect drops it, so that nothing of a lost socket survives into the
// next. Three goroutines serve a session: the reader (serve) reads every
// reply and routes messages without ever waiting for a consumer; the writer
// writes the commands, in the order of the replies the reader expects; the
// health check (watch) asks for a PING and drops a silent socket. None of
// them holds mu while on the socket.
type connection struct {
	s      *Subscriber
	node   string // the cluster node's address in sharded mode, else ""
	id     uint64 // numbers the connections of a Subscriber, from 1
	dial   dialFunc
	logger watermill.LoggerAdapter
	// ctx ends with the connection: it stops a dial and the backoff.
	ctx    context.Context
	cancel context.CancelFunc
	// bytesRead grows with every byte read: the health check's proof of life.
	bytesRead atomic.Uint64

	// mu guards what follows, and the fields of the channelStates and the
	// Redis-facing fields of the subscriptions the connection carries
	// (subscription.state, phase, awaits). Lock order, each lock taken only
	// while holding those to its left:
	//
	//	Subscriber.mu → connection.mu → subscription.mu → budget.mu, Subscriber.dropMu
	//	Subscriber.mu → slotMap.mu;  connection.mu → mover.mu, slotMap.mu, hookRunner.mu
	mu       sync.Mutex
	state    connState
	sess     *session                 // set in subscribing, live and broken
	channels map[string]*channelState // by Redis channel
	patterns map[string]*channelState // by Redis pattern
	dialErr  error                    // the last failed attempt's error; nil once one succeeds
	// pingRefused is set once Redis answered a PING with an error (an ACL
	// without +ping), which is logged once.
	pingRefused bool
}

// connState is where a connection stands; see the diagram on connection.
type connState uint8

const (
	stateDialing connState = iota
	stateRefused
	stateSubscribing
	stateLive
	stateBroken
	stateClosed
)

var stateNames = [...]string{"dialing", "refused", "subscribing", "live", "broken", "closed"}

func (st connState) String() string { return stateNames[st] }

// transitions lists the states each state may change to.
var transitions = [...][]connState{
	stateDialing:     {stateRefused, stateSubscribing, stateClosed},
	stateRefused:     {stateDialing, stateSubscribing, stateClosed},
	stateSubscribing: {stateLive, stateBroken, stateDialing, stateClosed},
	stateLive:        {stateBroken, stateDialing, stateClosed},
	stateBroken:      {stateDialing, stateClosed},
	stateClosed:      {},
}

// setState changes the state; a transition the diagram does not have is a
// bug. Called with mu held.
func (c *connection) setState(to connState) {
	if !slices.Contains(transitions[c.state], to) {
		panic(fmt.Sprintf("redispubsub: connection state %v -> %v", c.state, to))
	}
	c.state = to
}

// usable reports whether commands can be queued on the session. Called with
// mu held.
func (c *connection) usable() bool { return c.state == stateSubscribing || c.state == stateLive }

// session is what lives and dies with one socket.
type session struct {
	conn    net.Conn
	sent    []*command      // written and owing replies, oldest first
	pending pendingCommands // to write
	wake    chan struct{}   // capacity 1: pending is not empty
	done    chan struct{}   // closed when the session is dropped
	// awaiting counts the resubscriptions owed; live is set once there are
	// none. reconnect is the reconnect to report then.
	awaiting  int
	live      bool
	reconnect *pendingReconnect
	// broken is why this side dropped the socket, if it did.
	broken error
	// probe is the session's liveness probe; nil when probes are off.
	probe *probe
}

func newSession(conn net.Conn) *session {
	return &session{
		conn: conn, pending: newPendingCommands(),
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

func (sess *session) signal() {
	select {
	case sess.wake <- struct{}{}:
	default:
	}
}

// channelState is one Redis subscription (a channel or a pattern) and the
// local subscriptions that share it. Guarded by its connection's mu.
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
	// recovery is what SubscriberConfig.Recover knows of the channel's
	// history (connection_recovery.go); nil until a message with a position.
	// A pattern's are per channel that it matched, in recoveries.
	recovery   *channelRecovery
	recoveries map[string]*channelRecovery
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

// redisName is the command's name: the one place that maps a command to
// Redis's words, for writing it and for matching its replies.
func (cmd *command) redisName(sharded bool) string {
	switch {
	case cmd.kind == cmdPing:
		return "PING"
	case cmd.kind == cmdSubscribe && cmd.pattern:
		return "PSUBSCRIBE"
	case cmd.kind == cmdSubscribe && sharded:
		return "SSUBSCRIBE"
	case cmd.kind == cmdSubscribe:
		return "SUBSCRIBE"
	case cmd.pattern:
		return "PUNSUBSCRIBE"
	case sharded:
		return "SUNSUBSCRIBE"
	}
	return "UNSUBSCRIBE"
}

// answeredBy reports whether f is the confirmation cmd owes next.
func (cmd *command) answeredBy(f *frame, sharded bool) bool {
	want := frameSubscribe
	if cmd.kind == cmdUnsubscribe {
		want = frameUnsubscribe
	}
	return cmd.kind != cmdPing && f.kind == want && f.pattern == cmd.pattern &&
		f.sharded == (sharded && !cmd.pattern) && string(f.name) == cmd.names[cmd.replied]
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

func newConnection(s *Subscriber, node string, dial dialFunc) *connection {
	c := &connection{
		s:        s,
		node:     node,
		id:       s.connections.Add(1),
		dial:     dial,
		logger:   s.logger,
		channels: make(map[string]*channelState),
		patterns: make(map[string]*channelState),
	}
	c.ctx, c.cancel = context.WithCancel(s.ctx)
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
	if c.state == stateClosed {
		return false
	}
	if sn.isDone() {
		return true // ended before it was added
	}
	if c.state == stateRefused {
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
	// Published before isDone is read again: a subscription ending from
	// now on finds its connection and leaves it (Subscriber.leave).
	sn.conn.Store(c)
	var op, queued bool
	if c.usable() {
		op, queued = c.sess.pending.ops[key]
	}
	switch {
	case !c.usable():
		// Everything starts with the resubscription.
		sn.phase = phaseStarting
		st.starting = append(st.starting, sn)
		st.subscribed = true
	case queued && op:
		sn.phase = phaseStarting
		st.starting = append(st.starting, sn)
	case queued && !op:
		// Its UNSUBSCRIBE was not written: the channel stays subscribed.
		delete(c.sess.pending.ops, key)
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
	if sn.isDone() {
		// It ended while being added, before Subscriber.leave could
		// find it here: take it out again.
		c.removeLocked(sn)
	}
	return true
}

// join makes sn start at the PONG of the next PING. Called with mu held and
// the connection usable.
func (c *connection) join(st *channelState, sn *subscription) {
	sn.phase = phaseWaiting
	st.waiting++
	c.sess.pending.joiners = append(c.sess.pending.joiners, sn)
	c.sess.signal()
}

// queue asks for a SUBSCRIBE (subscribe) or UNSUBSCRIBE of key, cancelling
// the opposite one if it was not written yet. Called with mu held and the
// connection usable.
func (c *connection) queue(key redisKey, subscribe bool) {
	p := &c.sess.pending
	if op, ok := p.ops[key]; ok {
		if op != subscribe {
			delete(p.ops, key)
			if p.resub[key] {
				delete(p.resub, key)
				c.resubscribed()
			}
		}
		return
	}
	p.ops[key] = subscribe
	p.order = append(p.order, key)
	c.sess.signal()
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
	c.removeLocked(sn)
}

// removeLocked is remove with mu held.
func (c *connection) removeLocked(sn *subscription) {
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
	if st.subscribed && c.state != stateClosed {
		st.subscribed = false
		if c.usable() {
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
	if sess := c.sess; sess != nil {
		sns = append(sns, sess.waiting()...)
	}
	return sns
}

// waiting returns the subscriptions that wait for the reply to a command of
// the session, written or not; some may have ended or moved since. Called
// with the connection's mu held.
func (sess *session) waiting() []*subscription {
	var sns []*subscription
	for _, cmd := range sess.sent {
		for _, starters := range cmd.starters {
			sns = append(sns, starters...)
		}
		sns = append(sns, cmd.joiners...)
	}
	return append(sns, sess.pending.joiners...)
}

// empty reports whether the connection carries no Redis subscription and
// owes no reply. Called with mu held.
func (c *connection) empty() bool {
	sess := c.sess
	return len(c.channels) == 0 && len(c.patterns) == 0 &&
		(sess == nil || len(sess.sent) == 0 && sess.pending.empty())
}

// close ends the connection for good, and every subscription it carries.
func (c *connection) close() {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	c.setState(stateClosed)
	sess := c.sess
	for _, sn := range c.subscriptions() {
		sn.end()
	}
	c.mu.Unlock()
	c.cancel()
	if sess != nil {
		_ = sess.conn.Close() // the reader returns, and drops the session
	}
}

func (c *connection) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateClosed
}

// run dials, serves the socket until it breaks, and starts over with
// backoff until the connection is closed. The backoff grows until a
// connection is live again, so that a server that accepts sockets and
// drops them at once is not dialed in a tight loop.
func (c *connection) run() {
	defer c.s.wg.Done()
	var (
		lost     error
		lostAt   time.Time
		attempts int
		backoff  = c.s.config.ReconnectBackoffMin
	)
	for {
		attempts++
		sess, err := c.connect(lost, lostAt, attempts)
		if err == nil {
			var wasLive bool
			err, wasLive = c.serve(sess)
			if c.isClosed() {
				return
			}
			// A connection whose resubscription Redis never confirmed
			// does not end the downtime.
			if wasLive {
				lost, lostAt, attempts = err, time.Now(), 0
				backoff = c.s.config.ReconnectBackoffMin
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

// sleep waits for d unless the connection closes first.
func (c *connection) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// jitter spreads reconnects of many subscribers: d ± 20%.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}

// connect dials a socket, starts a session on it and queues the
// resubscription of every channel and pattern that has subscriptions. When
// lost is set, the reconnect is reported once Redis confirmed them all.
func (c *connection) connect(lost error, lostAt time.Time, attempts int) (*session, error) {
	conn, err := c.dial(c.ctx)
	if err != nil {
		c.dialFailed(err)
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		_ = conn.Close()
		return nil, ErrSubscriberClosed
	}
	sess := newSession(conn)
	c.sess, c.dialErr = sess, nil
	c.setState(stateSubscribing)
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
			sess.pending.ops[key] = true
			sess.pending.resub[key] = true
			sess.pending.order = append(sess.pending.order, key)
		}
		if pattern {
			patterns = len(names)
		} else {
			topics = len(names)
		}
	}
	sess.awaiting = topics + patterns
	if sess.probe = c.newProbe(); sess.probe != nil {
		// Subscribed with the resubscription: live means probed too.
		key := redisKey{name: sess.probe.channel}
		sess.pending.ops[key] = true
		sess.pending.resub[key] = true
		sess.pending.order = append(sess.pending.order, key)
		sess.awaiting++
	}
	if lost != nil {
		sess.reconnect = &pendingReconnect{
			event:  ReconnectEvent{Cause: lost, Attempts: attempts, Topics: topics, Patterns: patterns, Node: c.node},
			lostAt: lostAt,
		}
	}
	c.established()
	sess.signal()
	return sess, nil
}

// dialFailed records why a connection attempt failed. When retrying cannot
// heal the cause (a wrong password, a refused certificate), the
// subscriptions waiting for the connection fail at once with it.
func (c *connection) dialFailed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return
	}
	c.dialErr = err
	if !isPermanent(err) {
		if c.state == stateRefused {
			c.setState(stateDialing)
		}
		return
	}
	if c.state != stateRefused {
		c.setState(stateRefused)
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
	if c.state == stateRefused {
		return fmt.Errorf("%w: %w", ErrConnectionRefused, c.dialErr)
	}
	return c.dialErr
}

// lastDialError is dialError, or nil while connected.
func (c *connection) lastDialError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dialErr == nil {
		return nil
	}
	return c.dialError()
}

// pendingReconnect is a reconnect to report once resubscribed.
type pendingReconnect struct {
	event  ReconnectEvent
	lostAt time.Time
}

// resubscribed counts one resubscription confirmed (or no longer wanted).
// Called with mu held and a session.
func (c *connection) resubscribed() {
	c.sess.awaiting--
	c.established()
}

// established makes the connection live once no resubscription is owed,
// and reports the reconnect, if any. Called with mu held and a session.
func (c *connection) established() {
	sess := c.sess
	if sess.awaiting > 0 || sess.live || c.state != stateSubscribing {
		return
	}
	sess.live = true
	c.setState(stateLive)
	if r := sess.reconnect; r != nil {
		sess.reconnect = nil
		c.s.reportReconnect(r)
	}
}

// disconnect drops the session the reader gave up on, and readies every
// Redis subscription for the next one: the subscriptions waiting for a reply
// that will never come wait for the resubscription instead. It reports
// whether the session had been live.
func (c *connection) disconnect(sess *session) (wasLive bool) {
	c.mu.Lock()
	close(sess.done)
	sess.probe.stop()
	c.sess = nil
	if c.state != stateClosed {
		c.setState(stateDialing)
	}
	for _, table := range []map[string]*channelState{c.channels, c.patterns} {
		for _, st := range table {
			st.interrupted = st.confirmedMs != 0
		}
	}
	for _, cmd := range sess.sent {
		for _, sns := range cmd.starters {
			restart(sns)
		}
		restart(cmd.joiners)
	}
	restart(sess.pending.joiners)
	c.mu.Unlock()
	_ = sess.conn.Close()
	return sess.live
}

// restart moves subscriptions that waited for a reply on a lost connection
// to the resubscription of their channel. Called with mu held.
func restart(sns []*subscription) {
	for _, sn := range sns {
		if sn.phase != phaseWaiting {
			continue
		}
		sn.phase, sn.awaits = phaseStarting, nil
		sn.state.waiting--
		sn.state.starting = append(sn.state.starting, sn)
	}
}

// fault drops sess's socket because of err, unless it broke already (or is
// not the connection's session, or the connection is closed), and reports
// whether it dropped it. The reader then ends with err as the cause. Called
// with mu held.
func (c *connection) fault(sess *session, err error) bool {
	if c.sess != sess || sess.broken != nil || c.state == stateClosed {
		return false
	}
	sess.broken = err
	c.setState(stateBroken)
	_ = sess.conn.Close()
	return true
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
