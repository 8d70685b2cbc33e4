package redispubsub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
)

// ErrNotReady is wrapped by the error of Subscriber.Health and
// Publisher.Health when they are not ready, with why.
var ErrNotReady = errors.New("redispubsub: not ready")

// DisconnectEvent describes a connection the Subscriber lost; it reconnects
// by itself (a ReconnectEvent follows once it is back).
type DisconnectEvent struct {
	// Cause is why the connection was lost; it wraps ErrConnectionDeaf when
	// a liveness probe did not arrive.
	Cause error
	// Topics and Patterns count the Redis subscriptions the connection
	// carried: what is published on them until the reconnect is lost.
	Topics, Patterns int
	// Node is the address of the cluster node of the connection in sharded
	// mode; empty otherwise.
	Node string
}

// Health reports whether the Subscriber receives what is published: nil
// when every one of its connections is live (connected, and every topic and
// pattern resubscribed) and, with probes on, a probe published since it
// connected has arrived on it (so a Subscriber is not ready until about one
// round trip after it connected). Otherwise an error wrapping ErrNotReady
// says which connection is not and why, or ErrSubscriberClosed. Once Redis
// refused a probe channel or its PUBLISH (an ACL), the probes are off and
// every connection counts as live without them.
// It reads the Subscriber's state and sends nothing to Redis; ctx is only
// checked first. Safe for concurrent use; meant for a readiness endpoint.
func (s *Subscriber) Health(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrSubscriberClosed
	}
	conns := make([]*connection, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var problems []string
	for _, c := range conns {
		if why := c.notReady(); why != "" {
			if c.node != "" {
				why = "node " + c.node + ": " + why
			}
			problems = append(problems, why)
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("%w: %s", ErrNotReady, strings.Join(problems, "; "))
	}
	return nil
}

// notReady says why the connection is not ready, or "".
func (c *connection) notReady() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.state == stateClosed:
		return "" // closed as idle (sharded): nothing to carry
	case c.state != stateLive:
		why := "connection " + c.state.String()
		if c.dialErr != nil {
			why += " (last attempt: " + c.dialError().Error() + ")"
		}
		return why
	case c.probing() && c.sess.probe.got.Load() == 0:
		return "no liveness probe received yet on this connection"
	}
	return ""
}

// reportDisconnect counts nothing (the reconnect is counted) and calls
// OnDisconnect for a live connection lost, unless it was closed.
func (s *Subscriber) reportDisconnect(c *connection, cause error) {
	if c.ctx.Err() != nil {
		return // closed: not lost
	}
	hook := s.config.OnDisconnect
	if hook == nil {
		return
	}
	c.mu.Lock()
	ev := DisconnectEvent{Cause: cause, Topics: len(c.channels), Patterns: len(c.patterns), Node: c.node}
	c.mu.Unlock()
	s.hooks.call(func() { hook(ev) })
}

// reservedTopic refuses a topic that could name a probe channel.
func reservedTopic(topic string) error {
	if strings.HasPrefix(topic, ProbeTopicPrefix) {
		return fmt.Errorf("%w: %q starts with %q", ErrReservedTopic, topic, ProbeTopicPrefix)
	}
	return nil
}

// probeStats fills the probe figures of stats.
func (s *Subscriber) probeStats(stats *SubscriberStats) {
	stats.ProbesSent = s.probes.sent.Load()
	stats.ProbesReceived = s.probes.received.Load()
	stats.DeafConnections = s.probes.deaf.Load()
	stats.ProbeRoundTrip = s.probes.roundTrip.snapshot()
}

// Health reports whether the Publisher can publish: nil when it is open and
// a PING through its Client is answered within ctx (an ACL's refusal of
// PING is an answer too); else ErrPublisherClosed, or an error wrapping
// ErrNotReady with go-redis's. On a cluster the PING goes to one node. Safe
// for concurrent use; meant for a readiness endpoint.
func (p *Publisher) Health(ctx context.Context) error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrPublisherClosed
	}
	if err := p.config.Client.Ping(ctx).Err(); err != nil && !refusedPing(err) {
		p.logger.Debug("Publisher health check failed", watermill.LogFields{"err": err.Error()})
		return fmt.Errorf("%w: PING: %w", ErrNotReady, err)
	}
	return nil
}
