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

var errUnexpectedReply = errors.New("redispubsub: confirmation of a command this connection did not send")

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
		pubsub, err := s.connect(lost, lostAt, attempts)
		if err == nil {
			backoff = s.config.ReconnectBackoffMin
			err = s.receive(pubsub)
			established := s.disconnect(pubsub)
			if s.ctx.Err() != nil {
				return
			}
			// A connection whose resubscription Redis never confirmed
			// does not end the downtime.
			if established {
				lost, lostAt, attempts = err, time.Now(), 0
			}
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
// When lost is set, the reconnect is reported once Redis confirmed them all.
func (s *Subscriber) connect(lost error, lostAt time.Time, attempts int) (*redis.PubSub, error) {
	pubsub := s.config.Client.Subscribe(s.ctx)
	// PING dials outside mu; its PONG is read by receive like any reply.
	if err := pubsub.Ping(s.ctx); err != nil {
		_ = pubsub.Close()
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = pubsub.Close()
		return nil, ErrSubscriberClosed
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
	s.awaiting = len(channels) + len(globs)
	if lost != nil {
		s.reconnect = &pendingReconnect{
			event:  ReconnectEvent{Cause: lost, Attempts: attempts, Topics: len(channels), Patterns: len(globs)},
			lostAt: lostAt,
		}
	}
	report := s.established()
	s.mu.Unlock()
	s.report(report)
	return pubsub, nil
}

// pendingReconnect is a reconnect to report once resubscribed.
type pendingReconnect struct {
	event  ReconnectEvent
	lostAt time.Time
}

// established marks the connection established once no resubscription is
// awaited, and returns the reconnect to report, if any. Called with mu held.
func (s *Subscriber) established() *pendingReconnect {
	if s.awaiting > 0 {
		return nil
	}
	s.connected = true
	report := s.reconnect
	s.reconnect = nil
	return report
}

// resubscribeList forgets the replies owed on the previous connection,
// deletes the Redis subscriptions nobody uses any more, and returns the
// names to subscribe again, each now owing one confirmation.
func resubscribeList(table map[string]*redisSubscription) []string {
	names := make([]string, 0, len(table))
	for name, rs := range table {
		if rs.members() == 0 {
			delete(table, name)
			continue
		}
		rs.replies = append(rs.replies[:0], true)
		rs.resubscribing = true
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// disconnect closes a connection that receive gave up on, and readies every
// Redis subscription for the next one: Subscribe calls made meanwhile wait
// for its confirmation, and subscriptions waiting for a PONG that will never
// come wait for it too. It reports whether the connection had been
// established (its resubscriptions confirmed).
func (s *Subscriber) disconnect(pubsub *redis.PubSub) (wasEstablished bool) {
	s.mu.Lock()
	wasEstablished = s.connected
	s.connected, s.awaiting, s.reconnect = false, 0, nil
	if s.pubsub == pubsub {
		s.pubsub = nil
	}
	for token, pj := range s.joins {
		delete(s.joins, token)
		pj.sn.joinToken = ""
		pj.rs.joining--
		pj.rs.starting = append(pj.rs.starting, pj.sn)
		pj.rs.waiters = append(pj.rs.waiters, pj.joined)
	}
	for _, table := range []map[string]*redisSubscription{s.topics, s.patterns} {
		for name, rs := range table {
			rs.replies, rs.resubscribing = nil, false
			if rs.members() == 0 {
				delete(table, name)
			} else if isClosed(rs.confirmed) {
				rs.confirmed = make(chan struct{})
			}
		}
	}
	s.mu.Unlock()
	_ = pubsub.Close()
	return wasEstablished
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
			s.report(s.confirm(reply))
		case *redis.Pong:
			s.mu.Lock()
			s.joined(reply.Payload)
			s.mu.Unlock()
		default:
			s.logger.Info("Unexpected Pub/Sub reply ignored", watermill.LogFields{"reply": fmt.Sprintf("%T", reply)})
		}
	}
}

// watch checks the connection's health every quarter of the health-check
// interval. After a silent quarter it sends a PING; after three silent
// quarters in a row it closes the connection, which ends receive. So a
// connection that stopped answering is dropped after between 3/4 and 1
// HealthCheckInterval of silence, and a PONG has at least half of it to
// come back.
func (s *Subscriber) watch(pubsub *redis.PubSub, activity *atomic.Uint64, unhealthy *atomic.Bool, stop <-chan struct{}) {
	ticker := time.NewTicker(s.config.HealthCheckInterval / 4)
	defer ticker.Stop()
	seen, silent := activity.Load(), 0
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		if now := activity.Load(); now != seen {
			seen, silent = now, 0
			continue
		}
		silent++
		if silent == 1 && pubsub.Ping(s.ctx) != nil {
			silent = 3 // a connection that cannot be written to is dead
		}
		if silent >= 3 {
			unhealthy.Store(true)
			_ = pubsub.Close()
			return
		}
	}
}

// confirm matches a (un)subscribe confirmation with the oldest reply owed
// for its channel, and releases the Subscribe calls waiting for it once no
// later SUBSCRIBE is owed. It returns the reconnect to report, if this was
// the last resubscription awaited.
func (s *Subscriber) confirm(reply *redis.Subscription) *pendingReconnect {
	var table map[string]*redisSubscription
	switch reply.Kind {
	case "subscribe", "unsubscribe":
		table = s.topics
	case "psubscribe", "punsubscribe":
		table = s.patterns
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := table[reply.Channel]
	subscribe := reply.Kind == "subscribe" || reply.Kind == "psubscribe"
	if rs == nil || len(rs.replies) == 0 || rs.replies[0] != subscribe {
		// Not a reply this connection owes: go-redis reconnected and
		// resubscribed behind our back (it does so on a server's MOVING
		// notification). Start over, so that every count is right again.
		s.dropConnection(fmt.Errorf("%w: %s %s", errUnexpectedReply, reply.Kind, reply.Channel))
		return nil
	}
	if !rs.replies[0] {
		// The stream breaks here: what is published until the next
		// SUBSCRIBE is confirmed is not missed, nobody listened.
		rs.sequences = sequenceTracker{}
	}
	rs.replies = rs.replies[1:]
	var report *pendingReconnect
	if rs.resubscribing {
		rs.resubscribing = false
		s.awaiting--
		report = s.established()
	}
	switch {
	case rs.members() == 0:
		if len(rs.replies) == 0 {
			delete(table, reply.Channel)
		}
	case !slices.Contains(rs.replies, true):
		rs.start()
	}
	return report
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
	if rs == nil {
		s.mu.Unlock()
		return
	}
	// The stream is checked whether or not a subscription takes the
	// message: one may be joining, and it must not see a gap later.
	ev, verdict := s.checkSequence(rs, m)
	if verdict != duplicate && len(rs.subs) > 0 {
		in := &incoming{channel: m.Channel, pattern: m.Pattern != "", body: m.Payload, shared: len(rs.subs) > 1}
		for _, sn := range rs.subs {
			sn.push(in)
		}
	}
	s.mu.Unlock()
	switch verdict {
	case gapFound:
		s.reportGap(ev)
	case duplicate:
		s.stats.duplicates.Add(1)
		s.logger.Info("Duplicate message dropped (its publisher's pipeline was retried)", watermill.LogFields{
			"topic": ev.Topic, "publisher": ev.Publisher, "seq": ev.First,
		})
	}
}

// checkSequence reads m's sequence stamp and says whether it is new, a
// duplicate (its GapEvent's First is the duplicate's number) or reveals a
// gap in what rs received. Called with mu held.
func (s *Subscriber) checkSequence(rs *redisSubscription, m *redis.Message) (GapEvent, sequenceVerdict) {
	if s.stamps == nil {
		return GapEvent{}, inSequence
	}
	publisher, seq, ok := s.stamps.readStamp(m.Payload)
	if !ok {
		return GapEvent{}, inSequence
	}
	ev := GapEvent{Topic: strings.TrimPrefix(m.Channel, s.config.ChannelPrefix), Publisher: publisher}
	verdict, firstMissing := rs.sequences.observe(publisher, m.Channel, seq)
	switch verdict {
	case duplicate:
		ev.First = seq
	case gapFound:
		ev.First, ev.Last = firstMissing, seq-1
	}
	return ev, verdict
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

// report counts, logs and reports a re-established connection, if any.
func (s *Subscriber) report(r *pendingReconnect) {
	if r == nil {
		return
	}
	ev := r.event
	ev.Downtime = time.Since(r.lostAt)
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
