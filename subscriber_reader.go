package redispubsub

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

var errGap = errors.New("gap in the message sequence")

var errHealthCheck = errors.New("redispubsub: no answer to PING within the health-check interval")

// read owns the Subscriber's connection: it connects, resubscribes, reads
// until the connection breaks, and starts over with backoff until Close.
func (s *Subscriber) read() {
	defer s.wg.Done()
	var (
		lost     error // why the last established connection ended
		lostAt   time.Time
		attempts int
		backoff  = s.config.ReconnectBackoffMin
	)
	for {
		attempts++
		pubsub, topics, patterns, err := s.connect()
		if err == nil {
			if lost != nil {
				s.reconnected(ReconnectEvent{
					Cause: lost, Attempts: attempts, Downtime: time.Since(lostAt),
					Topics: topics, Patterns: patterns,
				})
			}
			attempts, backoff = 0, s.config.ReconnectBackoffMin
			err = s.receive(pubsub)
			s.disconnect(pubsub)
			if s.ctx.Err() != nil {
				return
			}
			lost, lostAt = err, time.Now()
			s.logger.Error("Redis Pub/Sub connection lost, reconnecting", err, nil)
		} else if s.ctx.Err() != nil {
			return
		} else {
			s.logger.Error("Cannot connect to Redis Pub/Sub, retrying", err, watermill.LogFields{
				"attempt": attempts, "backoff": backoff.String(),
			})
		}
		if !s.wait(jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, s.config.ReconnectBackoffMax)
	}
}

// connect opens a connection and subscribes, in two commands, to every topic
// and pattern that has subscriptions, registering the replies Redis owes.
func (s *Subscriber) connect() (pubsub *redis.PubSub, topics, patterns int, err error) {
	pubsub = s.config.Client.Subscribe(s.ctx)
	// PING dials outside mu; its PONG is read by receive like any reply.
	if err := pubsub.Ping(s.ctx); err != nil {
		_ = pubsub.Close()
		return nil, 0, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = pubsub.Close()
		return nil, 0, 0, ErrSubscriberClosed
	}
	s.pubsub = pubsub
	channels := resubscribeList(s.topics)
	globs := resubscribeList(s.patterns)
	if len(channels) > 0 {
		s.command(false, true, channels...)
	}
	if len(globs) > 0 {
		s.command(true, true, globs...)
	}
	return pubsub, len(channels), len(globs), nil
}

// resubscribeList forgets the replies owed on the previous connection,
// deletes the Redis subscriptions nobody uses any more, and returns the
// names to subscribe again, each now owing one confirmation.
func resubscribeList(table map[string]*redisSubscription) []string {
	names := make([]string, 0, len(table))
	for name, rs := range table {
		if len(rs.subs) == 0 {
			delete(table, name)
			continue
		}
		rs.replies = append(rs.replies[:0], true)
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// disconnect closes a connection that receive gave up on.
func (s *Subscriber) disconnect(pubsub *redis.PubSub) {
	s.mu.Lock()
	if s.pubsub == pubsub {
		s.pubsub = nil
	}
	s.mu.Unlock()
	_ = pubsub.Close()
}

// receive reads the connection until it fails, never blocking on consumers.
// It sets no read deadline (one that expired in the middle of a large
// message would desynchronise the stream); a watchdog checks health instead.
func (s *Subscriber) receive(pubsub *redis.PubSub) error {
	var (
		activity  atomic.Uint64
		unhealthy atomic.Bool
		stop      = make(chan struct{})
		stopped   = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		s.watch(pubsub, &activity, &unhealthy, stop)
	}()
	defer func() {
		close(stop)
		<-stopped
	}()
	for {
		reply, err := pubsub.Receive(s.ctx)
		if err != nil {
			switch {
			case s.ctx.Err() != nil:
				return s.ctx.Err()
			case unhealthy.Load():
				return errHealthCheck
			}
			return err
		}
		activity.Add(1)
		switch reply := reply.(type) {
		case *redis.Message:
			s.route(reply)
		case *redis.Subscription:
			s.confirm(reply)
		case *redis.Pong:
		default:
			s.logger.Info("Unexpected Pub/Sub reply ignored", watermill.LogFields{"reply": fmt.Sprintf("%T", reply)})
		}
	}
}

// watch sends a PING when the connection was silent for half the
// health-check interval, and closes it when it stayed silent for the other
// half too, which ends receive.
func (s *Subscriber) watch(pubsub *redis.PubSub, activity *atomic.Uint64, unhealthy *atomic.Bool, stop <-chan struct{}) {
	ticker := time.NewTicker(s.config.HealthCheckInterval / 2)
	defer ticker.Stop()
	seen, pinged := activity.Load(), false
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		if now := activity.Load(); now != seen {
			seen, pinged = now, false
			continue
		}
		if !pinged {
			pinged = true
			if err := pubsub.Ping(s.ctx); err == nil {
				continue
			}
		}
		unhealthy.Store(true)
		_ = pubsub.Close()
		return
	}
}

// confirm matches a (un)subscribe confirmation with the oldest reply owed
// for its channel, and releases the Subscribe calls waiting for it once no
// later SUBSCRIBE is owed.
func (s *Subscriber) confirm(reply *redis.Subscription) {
	var table map[string]*redisSubscription
	switch reply.Kind {
	case "subscribe", "unsubscribe":
		table = s.topics
	case "psubscribe", "punsubscribe":
		table = s.patterns
	default:
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := table[reply.Channel]
	if rs == nil || len(rs.replies) == 0 {
		return
	}
	rs.replies = rs.replies[1:]
	if len(rs.subs) == 0 {
		if len(rs.replies) == 0 {
			delete(table, reply.Channel)
		}
		return
	}
	if !slices.Contains(rs.replies, true) {
		select {
		case <-rs.confirmed:
		default:
			close(rs.confirmed)
		}
	}
}

// route queues a message for every subscription of its channel or pattern.
// It does not decode: the reader's only work per message is reading it, so
// that it keeps up with Redis whatever the consumers and the Marshaler cost.
func (s *Subscriber) route(m *redis.Message) {
	s.stats.received.Add(1)
	s.mu.Lock()
	var rs *redisSubscription
	if m.Pattern != "" {
		rs = s.patterns[m.Pattern]
	} else {
		rs = s.topics[m.Channel]
	}
	if rs == nil || len(rs.subs) == 0 {
		s.mu.Unlock()
		return
	}
	gap, found := s.checkSequence(rs, m)
	in := &incoming{channel: m.Channel, pattern: m.Pattern != "", body: m.Payload, shared: len(rs.subs) > 1}
	for _, sn := range rs.subs {
		sn.push(in)
	}
	s.mu.Unlock()
	if found {
		s.reportGap(gap)
	}
}

// checkSequence returns the gap, if any, that m's sequence stamp reveals in
// what rs received. Called with mu held.
func (s *Subscriber) checkSequence(rs *redisSubscription, m *redis.Message) (GapEvent, bool) {
	if s.stamps == nil {
		return GapEvent{}, false
	}
	publisher, seq, ok := s.stamps.readStamp(m.Payload)
	if !ok {
		return GapEvent{}, false
	}
	first, last, gap := rs.sequences.observe(publisher, m.Channel, seq)
	return GapEvent{
		Topic:     strings.TrimPrefix(m.Channel, s.config.ChannelPrefix),
		Publisher: publisher, First: first, Last: last,
	}, gap
}

// reportGap counts, logs and reports messages never received.
func (s *Subscriber) reportGap(ev GapEvent) {
	s.stats.gaps.Add(ev.Missing())
	s.logger.Error("Messages never received (Redis Pub/Sub does not keep them)", errGap, watermill.LogFields{
		"topic": ev.Topic, "publisher": ev.Publisher, "first": ev.First, "last": ev.Last, "missing": ev.Missing(),
	})
	if s.config.OnGap != nil {
		s.config.OnGap(ev)
	}
}

// incoming is a message body read from Redis. It is decoded at most once, by
// the first subscription that takes it from its queue, and shared by all.
type incoming struct {
	channel string
	pattern bool
	body    string
	shared  bool // queued for more than one subscription

	once sync.Once
	msg  *message.Message
	err  error
}

// decode returns the decoded message, counting and logging a failure once.
func (in *incoming) decode(s *Subscriber) (*message.Message, error) {
	in.once.Do(func() {
		topic := strings.TrimPrefix(in.channel, s.config.ChannelPrefix)
		in.msg, in.err = s.config.Marshaler.Unmarshal(topic, []byte(in.body))
		if in.err != nil {
			s.stats.decodeFailures.Add(1)
			s.logger.Error("Cannot decode message, skipped", in.err, watermill.LogFields{
				"channel": in.channel, "body_bytes": len(in.body),
			})
			return
		}
		delete(in.msg.Metadata, MetadataPublisher)
		delete(in.msg.Metadata, MetadataSequence)
		if in.pattern {
			in.msg.Metadata.Set(MetadataTopic, topic)
		}
		in.body = ""
	})
	return in.msg, in.err
}

// reconnected counts and reports a re-established connection.
func (s *Subscriber) reconnected(ev ReconnectEvent) {
	s.stats.reconnects.Add(1)
	s.logger.Info("Redis Pub/Sub reconnected and resubscribed", watermill.LogFields{
		"cause": ev.Cause.Error(), "attempts": ev.Attempts, "downtime": ev.Downtime.String(),
		"topics": ev.Topics, "patterns": ev.Patterns,
	})
	if s.config.OnReconnect != nil {
		s.config.OnReconnect(ev)
	}
}

// wait sleeps for d unless the Subscriber closes first.
func (s *Subscriber) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// jitter spreads reconnects of many subscribers: d ± 20%.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}

var _ message.Subscriber = (*Subscriber)(nil)
var _ message.SubscribeInitializer = (*Subscriber)(nil)
var _ message.Publisher = (*Publisher)(nil)
