package redispubsub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// This file is the end-to-end liveness probe. PING proves that a server
// answers, not that what publishers publish reaches the connection: behind
// a fixed address that failed over, or with a Sentinel master split from
// the one publishers write to, a connection answers PING and receives
// nothing. So each connection also subscribes (with its resubscription) to
// a probe channel of its own, and while it is subscribed the Subscriber
// publishes a probe there through SubscriberConfig.Client, the path
// publishers take, every ProbeInterval. A probe that Redis accepted and that
// has not arrived half an interval later (probeTimeout) makes the
// connection deaf: it is dropped (fault) and re-established, which
// re-resolves the address.

// ProbeTopicPrefix starts the topic of every probe channel: a connection's
// probe channel is ChannelPrefix + ProbeTopicPrefix + "<subscriber id>:<connection
// number>" (in sharded mode on a cluster followed by ":{<tag>}", a hash tag
// that puts it in a slot of the connection's node). Subscribe,
// SubscribePattern and Publisher.Publish refuse topics that start with it
// (ErrReservedTopic), and what a pattern subscription receives on such a
// channel is never delivered.
const ProbeTopicPrefix = "__rps:probe:"

var (
	// ErrConnectionDeaf is wrapped by the Cause of a ReconnectEvent (and a
	// DisconnectEvent) of a connection that was dropped because a probe
	// Redis accepted did not arrive on it within half a ProbeInterval.
	ErrConnectionDeaf = errors.New("redispubsub: connection deaf: a liveness probe Redis accepted did not arrive")
	// ErrReservedTopic is wrapped by the error of a Subscribe or
	// SubscribePattern of a topic that starts with ProbeTopicPrefix, and by
	// that of a Publisher.Publish on such a topic, which sends nothing.
	ErrReservedTopic = errors.New("redispubsub: topic reserved for liveness probes")
)

// probeTagAttempts bounds the search for a hash tag in a node's slots: a
// node owning 1/1000 of the slots needs about 1000 attempts.
const probeTagAttempts = 1 << 17

// probe is one session's probe channel and the probes published on it.
type probe struct {
	channel string
	// ctx ends with the session: it cuts a probe's PUBLISH short.
	ctx    context.Context
	cancel context.CancelFunc
	// ready is closed once Redis confirmed the probe channel's SUBSCRIBE;
	// confirmed says so; moved, that Redis answered it with MOVED (a slot
	// map older than the cluster's): this session goes without probes
	// (all guarded by the connection's mu).
	ready     chan struct{}
	confirmed bool
	moved     bool
	// sent is the number of the last probe published (from 1), sentAt when
	// its PUBLISH was sent (Unix nanoseconds); got is the highest number
	// received. Read and written without mu.
	sent   atomic.Uint64
	sentAt atomic.Int64
	got    atomic.Uint64
}

// stop ends what the session's probe does; p may be nil.
func (p *probe) stop() {
	if p != nil {
		p.cancel()
	}
}

// probeCounters are the Subscriber's probe figures (see SubscriberStats),
// and whether its probes are off.
type probeCounters struct {
	sent, received, deaf atomic.Uint64
	roundTrip            histogram
	// off is set once Redis refused a probe channel or its PUBLISH (an
	// ACL, which applies to every connection of the Subscriber); written
	// only by disableProbes.
	off atomic.Bool
}

// newProbe returns the probe of a session being connected, or nil when
// probes are off (ProbeInterval negative, or refused by Redis), or
// (sharded, on a cluster) no channel in a slot of the node could be named.
// Called with mu held.
func (c *connection) newProbe() *probe {
	s := c.s
	if s.config.ProbeInterval < 0 || s.probes.off.Load() {
		return nil
	}
	name := s.config.ChannelPrefix + ProbeTopicPrefix + s.id + ":" + strconv.FormatUint(c.id, 10)
	if s.slots != nil {
		tagged, ok := s.slots.nameInNode(name, c.node)
		if !ok {
			c.logger.Info("No probe channel in a slot of this node (ChannelPrefix holds a hash tag?): its connection goes without liveness probes", watermill.LogFields{"channel": name})
			return nil
		}
		name = tagged
	}
	p := &probe{channel: name, ready: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(c.ctx)
	return p
}

// isProbe reports whether the Redis channel name is sess's probe channel.
// Called with mu held.
func isProbe(sess *session, name string, pattern bool) bool {
	return !pattern && sess.probe != nil && sess.probe.channel == name
}

// probeConfirmed starts the probes when name is the probe channel, whose
// SUBSCRIBE Redis confirmed. Called with mu held.
func (c *connection) probeConfirmed(sess *session, name string, pattern bool) {
	if p := sess.probe; isProbe(sess, name, pattern) && !p.confirmed {
		p.confirmed = true
		close(p.ready)
	}
}

// probeMoved notes that Redis answered the SSUBSCRIBE of the probe channel
// name with MOVED: the session goes without probes, the next one names a
// channel by the reloaded slot map. Called with mu held.
func (c *connection) probeMoved(sess *session, name string, pattern bool) {
	if isProbe(sess, name, pattern) {
		sess.probe.moved = true
		c.logger.Info("Probe channel in a slot the node no longer owns: this connection goes without probes until it reconnects", watermill.LogFields{"channel": name})
	}
}

// probing reports whether the connection's session is probed: Health then
// waits for a probe. Called with mu held and a session.
func (c *connection) probing() bool {
	p := c.sess.probe
	return p != nil && !c.s.probes.off.Load() && !p.moved
}

// disableProbes turns the probes of the Subscriber off for good, saying
// once why (whichever connection sees it first): Redis refused the probe
// channel (an ACL, which applies to every connection, those a sharded
// Subscriber makes later included). The connections work as without
// probes. Called with mu held.
func (c *connection) disableProbes(what string, err error) {
	if !c.s.probes.off.CompareAndSwap(false, true) {
		return
	}
	pattern := c.s.config.ChannelPrefix + ProbeTopicPrefix + "*"
	publish := "+publish"
	if c.s.config.Sharded {
		publish = "+spublish"
	}
	c.logger.Error("Redis refused the liveness probe: probes are off for this Subscriber, which works as before "+
		"but a deaf connection (a failover behind a fixed address, a split brain) goes unnoticed; allow the user the channel pattern "+
		pattern+" and "+publish+" (or set ProbeInterval negative)", err, watermill.LogFields{"refused": what})
}

// consumeProbe reports whether f, a message, was published on a probe
// channel (this or another Subscriber's, reaching a pattern subscription):
// such a message is never routed. A probe of sess's own channel counts as
// arrived.
func (c *connection) consumeProbe(sess *session, f *frame) bool {
	channel := f.name
	if f.kind == framePMessage {
		channel = f.channel
	}
	if !bytes.HasPrefix(channel, c.s.probePrefix) {
		return false
	}
	p := sess.probe
	if f.kind != frameMessage || p == nil || string(f.name) != p.channel {
		return true
	}
	n, err := strconv.ParseUint(string(f.body), 10, 64)
	if err != nil || n <= p.got.Load() || n > p.sent.Load() {
		return true // not one of this session's probes, or a late one
	}
	if n == p.sent.Load() {
		c.s.probes.roundTrip.observe(time.Duration(time.Now().UnixNano() - p.sentAt.Load()))
	}
	c.s.probes.received.Add(1)
	p.got.Store(n) // only the reader writes got
	return true
}

// runProbes publishes sess's probes, one per ProbeInterval, from the moment
// Redis confirmed the probe channel until the session ends, and drops the
// socket as deaf when a probe Redis accepted has not arrived probeTimeout
// after it was accepted. A probe Redis does not accept (a server down, a
// timeout) proves nothing either way and is retried at the next interval:
// the health check takes care of a server that does not answer. A probe
// refused by an ACL turns the probes off.
func (c *connection) runProbes(sess *session) {
	p := sess.probe
	select {
	case <-sess.done:
		return
	case <-p.ready:
	}
	interval := c.s.config.ProbeInterval
	timeout := probeTimeout(interval)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	wait := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-sess.done:
			return false
		case <-timer.C:
			return true
		}
	}
	for seq := uint64(1); ; seq++ {
		accepted, stop := c.publishProbe(sess, seq, interval)
		if stop || !wait(timeout) {
			return
		}
		if accepted && p.got.Load() < seq {
			c.mu.Lock()
			if c.fault(sess, fmt.Errorf("%w: probe %d on %q not received %v after Redis accepted it", ErrConnectionDeaf, seq, p.channel, timeout)) {
				c.s.probes.deaf.Add(1)
			}
			c.mu.Unlock()
			return
		}
		if !wait(interval - timeout) {
			return
		}
	}
}

// probeTimeout is how long a probe Redis accepted has to arrive: half the
// interval, so that a connection that goes deaf just after a probe arrived
// is found one and a half intervals later, and is back within two. A
// probe's round trip takes milliseconds (the reader never waits for
// consumers), so half of the 5 s default leaves room for a long backlog
// in Redis's output buffer.
func probeTimeout(interval time.Duration) time.Duration { return interval / 2 }

// publishProbe publishes probe seq of sess. accepted says whether Redis
// accepted it; stop, whether probing ends (session over, or refused).
func (c *connection) publishProbe(sess *session, seq uint64, interval time.Duration) (accepted, stop bool) {
	p := sess.probe
	ctx, cancel := context.WithTimeout(p.ctx, interval)
	defer cancel()
	p.sentAt.Store(time.Now().UnixNano())
	p.sent.Store(seq)
	err := c.s.probePublish(ctx, p.channel, strconv.FormatUint(seq, 10))
	switch {
	case err == nil:
		c.s.probes.sent.Add(1)
		return true, false
	case p.ctx.Err() != nil:
		return false, true
	case isPermanent(err):
		c.mu.Lock()
		c.disableProbes("PUBLISH "+p.channel, err)
		c.mu.Unlock()
		return false, true
	}
	c.logger.Debug("Liveness probe not published; trying again next interval", watermill.LogFields{"err": err.Error()})
	return false, false
}

// publishProbe is the Subscriber's default probePublish: PUBLISH (SPUBLISH in
// sharded mode) through the user's Client.
func (s *Subscriber) publishProbe(ctx context.Context, channel, body string) error {
	if s.config.Sharded {
		return s.config.Client.SPublish(ctx, channel, body).Err()
	}
	return s.config.Client.Publish(ctx, channel, body).Err()
}

// probeBounds are the upper bounds of the buckets of the probes' round-trip
// histogram, in increasing order. Never written: DurationHistogram.Bounds
// hands out a copy.
var probeBounds = [...]time.Duration{
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
}

// DurationHistogram is a cumulative histogram of durations, as Prometheus
// has them. Each one returned (by Stats) has slices of its own, which the
// caller may keep and change.
type DurationHistogram struct {
	// Count and Sum are the number and the sum of the observations.
	Count uint64
	Sum   time.Duration
	// Bounds are the upper bounds of the buckets, in increasing order
	// (1 ms to 5 s for SubscriberStats.ProbeRoundTrip); Buckets has one
	// count per bound: Buckets[i] counts the observations of at most
	// Bounds[i] (so it includes Buckets[i-1]). Observations above the last
	// bound are in Count only.
	Bounds  []time.Duration
	Buckets []uint64
}

// histogram records durations in probeBounds; safe for concurrent use.
type histogram struct {
	count, sum atomic.Uint64
	buckets    [len(probeBounds)]atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	d = max(d, 0)
	for i, bound := range probeBounds {
		if d <= bound {
			h.buckets[i].Add(1)
			break
		}
	}
	h.sum.Add(uint64(d))
	h.count.Add(1)
}

func (h *histogram) snapshot() DurationHistogram {
	out := DurationHistogram{
		Count:   h.count.Load(),
		Sum:     time.Duration(h.sum.Load()),
		Bounds:  append([]time.Duration(nil), probeBounds[:]...), // a copy: probeBounds is never written
		Buckets: make([]uint64, len(probeBounds)),
	}
	var cumulative uint64
	for i := range out.Buckets {
		cumulative += h.buckets[i].Load()
		out.Buckets[i] = cumulative
	}
	return out
}
