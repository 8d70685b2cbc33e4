package redispubsub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// MetadataTopic is the metadata key under which a message received through
// SubscribePattern carries the concrete topic (its channel without
// ChannelPrefix).
const MetadataTopic = "redispubsub_topic"

var errQueueFull = errors.New("subscription queue full")

// Subscriber receives Watermill messages from Redis Pub/Sub channels over one
// connection, shared by all its subscriptions. It is safe for concurrent use.
//
// What a caller may rely on:
//   - Subscribe returns once Redis confirmed the subscription: a message
//     published after it returns is delivered (unless the connection is lost
//     meanwhile, see Stats().Reconnects).
//   - Every subscription of a topic gets every message; Redis sees one
//     subscriber per topic, whatever the number of local subscriptions.
//   - One message at a time per subscription: the next is sent after Ack;
//     Nack redelivers the same message after NackResendSleep. Messages from
//     one publisher connection on one channel keep their order.
//   - The connection is read continuously; a consumer that falls behind
//     loses messages to its bounded queue (see OverflowPolicy), counted and
//     logged.
//   - A lost connection is re-established and every topic and pattern
//     resubscribed; what was published meanwhile is lost.
//   - Ending a subscription's context, or Close, closes its output channel
//     even when nobody reads it or a message waits for its Ack.
type Subscriber struct {
	config SubscriberConfig
	logger watermill.LoggerAdapter

	// ctx is cancelled by Close; it ends every subscription and the reader.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the reader and every subscription goroutine

	mu sync.Mutex
	// pubsub is the live connection, nil while (re)connecting.
	pubsub *redis.PubSub
	// topics and patterns hold the state of every Redis subscription, keyed
	// by Redis channel or pattern (prefix included).
	topics, patterns map[string]*redisSubscription
	// initialized holds subscriptions made by SubscribeInitialize until the
	// first Subscribe of their topic takes them over.
	initialized map[string]*subscription
	// joins holds subscriptions of live channels waiting for the PONG of
	// their PING, keyed by its payload: what arrives before it was published
	// before they subscribed, and is not theirs.
	joins   map[string]*pendingJoin
	joinSeq uint64
	// awaiting counts the resubscriptions sent on the current connection
	// that Redis has not confirmed; connected is set once there are none.
	awaiting  int
	connected bool
	// reconnect is reported once awaiting drops to zero; nil when no
	// reconnect is due.
	reconnect *pendingReconnect
	closed    bool

	// stamps reads sequence stamps; nil when gap detection is off or the
	// Marshaler carries no metadata.
	stamps stampReader

	closeOnce sync.Once
	stats     subscriberCounters
}

// subscriptionKey names what a subscription listens to: a topic, or a
// pattern of topics. Both exclude the ChannelPrefix.
type subscriptionKey struct {
	name    string
	pattern bool
}

// redisSubscription is the state of one SUBSCRIBE (or PSUBSCRIBE) shared by
// the local subscriptions of a channel (or pattern).
type redisSubscription struct {
	// subs receive the channel's messages. starting ones wait for Redis to
	// confirm the latest SUBSCRIBE, joining ones for the PONG of their PING:
	// what arrives before that was published before they subscribed.
	subs     []*subscription
	starting []*subscription
	joining  int
	// confirmed is closed once Redis confirmed the latest SUBSCRIBE on the
	// current connection; waiters are closed with it.
	confirmed chan struct{}
	waiters   []chan struct{}
	// replies lists the confirmations Redis owes for this channel on the
	// current connection, in the order the commands were sent: true for a
	// SUBSCRIBE, false for an UNSUBSCRIBE.
	replies []bool
	// resubscribing is set while the resubscription after a reconnect is
	// not confirmed yet.
	resubscribing bool
	// sequences finds the gaps in what this subscription received.
	sequences sequenceTracker
}

// members counts the local subscriptions of rs, started or not.
func (rs *redisSubscription) members() int { return len(rs.subs) + len(rs.starting) + rs.joining }

// start starts the subscriptions waiting for the latest SUBSCRIBE, which
// Redis just confirmed, and releases the Subscribe calls waiting for it.
func (rs *redisSubscription) start() {
	rs.subs = append(rs.subs, rs.starting...)
	rs.starting = nil
	if !isClosed(rs.confirmed) {
		close(rs.confirmed)
	}
	for _, w := range rs.waiters {
		close(w)
	}
	rs.waiters = nil
}

// pendingJoin is a subscription waiting to start at the PONG of its PING.
type pendingJoin struct {
	rs     *redisSubscription
	sn     *subscription
	joined chan struct{}
}

// isClosed reports whether ch is closed.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

type subscriberCounters struct {
	received, decodeFailures, delivered, acked, nacked, dropped, discarded, duplicates, reconnects, gaps atomic.Uint64
}

// NewSubscriber returns a Subscriber and starts its connection; logger may be
// nil. A Redis that cannot be reached is not an error here: the Subscriber
// keeps trying, and Subscribe reports what it could not confirm.
func NewSubscriber(config SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Subscriber{
		config:      config,
		logger:      logger.With(watermill.LogFields{"component": "redispubsub.Subscriber"}),
		ctx:         ctx,
		cancel:      cancel,
		topics:      make(map[string]*redisSubscription),
		patterns:    make(map[string]*redisSubscription),
		initialized: make(map[string]*subscription),
		joins:       make(map[string]*pendingJoin),
	}
	if stamps, ok := config.Marshaler.(stampReader); ok && !config.DisableGapDetection {
		s.stamps = stamps
	}
	s.wg.Add(1)
	go s.read()
	return s, nil
}

// Subscribe returns a channel of the messages published on topic from now
// on. It returns once Redis confirmed the subscription, or with an error when
// ctx ends, SubscribeTimeout passes or the Subscriber is closed first. The
// channel is closed when ctx ends or the Subscriber closes.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.subscribe(ctx, subscriptionKey{name: topic})
}

// SubscribePattern is Subscribe for every topic that matches the Redis glob
// pattern (PSUBSCRIBE; ChannelPrefix is prepended, its glob characters
// escaped). Each message carries its topic in metadata under MetadataTopic.
func (s *Subscriber) SubscribePattern(ctx context.Context, pattern string) (<-chan *message.Message, error) {
	return s.subscribe(ctx, subscriptionKey{name: pattern, pattern: true})
}

// SubscribeInitialize subscribes to topic ahead of time, so that messages
// published before the first Subscribe of topic are kept (up to QueueSize,
// with the OverflowPolicy) and handed to that Subscribe. It returns once
// Redis confirmed the subscription. Calling it again before that Subscribe
// does nothing. It implements message.SubscribeInitializer.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	key := subscriptionKey{name: topic}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrSubscriberClosed
	}
	var confirmed chan struct{}
	if sn, ok := s.initialized[topic]; ok {
		confirmed = s.readiness(sn) // an earlier call may have timed out
	} else {
		sn = newSubscription(s, key)
		s.initialized[topic] = sn
		confirmed = s.join(sn)
	}
	s.mu.Unlock()
	return s.awaitConfirmation(context.Background(), key, confirmed)
}

// readiness returns the channel closed once sn, which joined earlier,
// receives what is published: when it started already, once its Redis
// subscription is confirmed on the current connection. Called with mu held.
func (s *Subscriber) readiness(sn *subscription) chan struct{} {
	if !isClosed(sn.ready) {
		return sn.ready
	}
	return s.state(sn.key).confirmed
}

func (s *Subscriber) subscribe(ctx context.Context, key subscriptionKey) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrSubscriberClosed
	}
	var confirmed chan struct{}
	sn, initialized := s.initialized[key.name]
	if initialized && !key.pattern {
		delete(s.initialized, key.name)
		confirmed = s.readiness(sn)
	} else {
		sn = newSubscription(s, key)
		confirmed = s.join(sn)
	}
	sn.ctx, sn.cancel = context.WithCancel(ctx)
	// Started under mu, so that Close, which takes mu, waits for it.
	s.wg.Add(1)
	stop := context.AfterFunc(s.ctx, sn.cancel)
	go func() {
		sn.run()
		stop()
	}()
	s.mu.Unlock()

	if err := s.awaitConfirmation(sn.ctx, key, confirmed); err != nil {
		sn.cancel()
		return nil, err
	}
	s.logger.Debug("Subscribed", watermill.LogFields{"topic": key.name, "pattern": key.pattern})
	return sn.out, nil
}

func (s *Subscriber) awaitConfirmation(ctx context.Context, key subscriptionKey, confirmed <-chan struct{}) error {
	timer := time.NewTimer(s.config.SubscribeTimeout)
	defer timer.Stop()
	select {
	case <-confirmed:
		return nil
	case <-s.ctx.Done():
		return ErrSubscriberClosed
	case <-ctx.Done():
		return fmt.Errorf("redispubsub: subscribe to %q: %w", key.name, context.Cause(ctx))
	case <-timer.C:
		return fmt.Errorf("%w: %q after %v", ErrSubscribeTimeout, key.name, s.config.SubscribeTimeout)
	}
}

// redisName is the channel or pattern that Redis knows key by.
func (s *Subscriber) redisName(key subscriptionKey) string {
	if key.pattern {
		return escapeGlob(s.config.ChannelPrefix) + key.name
	}
	return s.config.ChannelPrefix + key.name
}

// table returns the map holding the Redis subscriptions of key's kind.
func (s *Subscriber) table(key subscriptionKey) map[string]*redisSubscription {
	if key.pattern {
		return s.patterns
	}
	return s.topics
}

func (s *Subscriber) state(key subscriptionKey) *redisSubscription {
	return s.table(key)[s.redisName(key)]
}

// join adds sn to its Redis subscription, and sets and returns sn.ready,
// closed once sn receives what is published from then on. The first
// subscription of a channel SUBSCRIBEs and starts at Redis's confirmation;
// one that joins a live channel starts at the PONG of a PING (joinLive), so
// that it does not get messages published before it subscribed that were
// still on their way. Called with mu held.
func (s *Subscriber) join(sn *subscription) chan struct{} {
	name := s.redisName(sn.key)
	table := s.table(sn.key)
	rs := table[name]
	if rs == nil {
		rs = &redisSubscription{sequences: sequenceTracker{}}
		table[name] = rs
	}
	switch {
	case rs.members() == 0:
		// Messages may still arrive from a previous SUBSCRIBE whose
		// UNSUBSCRIBE Redis has not confirmed: sn starts at the
		// confirmation of its own SUBSCRIBE.
		rs.starting = append(rs.starting, sn)
		rs.confirmed = make(chan struct{})
		rs.sequences = sequenceTracker{} // nothing was missed while nobody listened
		if s.pubsub != nil {
			rs.replies = append(rs.replies, true)
			s.command(sn.key.pattern, true, name)
		}
		sn.ready = rs.confirmed
	case s.pubsub == nil || !isClosed(rs.confirmed):
		// A SUBSCRIBE (or the resubscription) is on its way: start with it.
		rs.starting = append(rs.starting, sn)
		sn.ready = rs.confirmed
	default:
		sn.ready = s.joinLive(rs, sn)
	}
	return sn.ready
}

// joinLive sends a PING whose PONG will start sn. Called with mu held.
func (s *Subscriber) joinLive(rs *redisSubscription, sn *subscription) chan struct{} {
	s.joinSeq++
	token := "join:" + strconv.FormatUint(s.joinSeq, 10)
	pj := &pendingJoin{rs: rs, sn: sn, joined: make(chan struct{})}
	s.joins[token] = pj
	rs.joining++
	sn.joinToken = token
	if err := s.pubsub.Ping(s.ctx, token); err != nil {
		s.dropConnection(fmt.Errorf("PING: %w", err))
	}
	return pj.joined
}

// joined starts the subscription whose PING's PONG carried token. Called
// with mu held.
func (s *Subscriber) joined(token string) {
	pj, ok := s.joins[token]
	if !ok {
		return // a health check's PONG, or a join that ended meanwhile
	}
	delete(s.joins, token)
	pj.sn.joinToken = ""
	pj.rs.joining--
	pj.rs.subs = append(pj.rs.subs, pj.sn)
	close(pj.joined)
}

// leave removes an ended subscription from its Redis subscription, and
// unsubscribes in Redis when it was the last.
func (s *Subscriber) leave(sn *subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := s.redisName(sn.key)
	table := s.table(sn.key)
	rs := table[name]
	if rs == nil {
		return
	}
	if pj, ok := s.joins[sn.joinToken]; ok && pj.sn == sn {
		delete(s.joins, sn.joinToken)
		rs.joining--
	} else {
		rs.subs = slices.DeleteFunc(rs.subs, func(other *subscription) bool { return other == sn })
		rs.starting = slices.DeleteFunc(rs.starting, func(other *subscription) bool { return other == sn })
	}
	if rs.members() > 0 {
		return
	}
	if s.pubsub != nil && !s.closed {
		rs.replies = append(rs.replies, false)
		s.command(sn.key.pattern, false, name)
	}
	if len(rs.replies) == 0 {
		delete(table, name)
	}
}

// command sends SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE or PUNSUBSCRIBE on the
// live connection. A failed write means the connection is broken: it is
// closed, and the reader reconnects and resubscribes whatever is wanted then.
// Called with mu held, so that commands go out in the order of replies.
func (s *Subscriber) command(pattern, subscribe bool, names ...string) {
	var err error
	var name string
	switch {
	case pattern && subscribe:
		name, err = "PSUBSCRIBE", s.pubsub.PSubscribe(s.ctx, names...)
	case pattern:
		name, err = "PUNSUBSCRIBE", s.pubsub.PUnsubscribe(s.ctx, names...)
	case subscribe:
		name, err = "SUBSCRIBE", s.pubsub.Subscribe(s.ctx, names...)
	default:
		name, err = "UNSUBSCRIBE", s.pubsub.Unsubscribe(s.ctx, names...)
	}
	if err != nil {
		s.dropConnection(fmt.Errorf("%s %s: %w", name, strings.Join(names, " "), err))
	}
}

// dropConnection logs why and closes the live connection; the reader then
// reconnects and resubscribes whatever is wanted by then. Called with mu
// held.
func (s *Subscriber) dropConnection(err error) {
	s.logger.Error("Dropping the Pub/Sub connection", err, nil)
	_ = s.pubsub.Close()
}

// Close ends every subscription, closing their output channels, closes the
// Subscriber's connection and waits until all its goroutines have returned.
// It is idempotent and never closes SubscriberConfig.Client.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for _, sn := range s.initialized {
			sn.mu.Lock()
			s.stats.discarded.Add(uint64(sn.queue.len()))
			sn.mu.Unlock()
		}
		s.initialized = nil
		s.cancel()
		if s.pubsub != nil {
			_ = s.pubsub.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		s.logger.Debug("Subscriber closed", nil)
	})
	return nil
}

// Stats returns the Subscriber's counters since it was made.
func (s *Subscriber) Stats() SubscriberStats {
	c := &s.stats
	return SubscriberStats{
		Received:       c.received.Load(),
		DecodeFailures: c.decodeFailures.Load(),
		Delivered:      c.delivered.Load(),
		Acked:          c.acked.Load(),
		Nacked:         c.nacked.Load(),
		Dropped:        c.dropped.Load(),
		Discarded:      c.discarded.Load(),
		Reconnects:     c.reconnects.Load(),
		Gaps:           c.gaps.Load(),
		Duplicates:     c.duplicates.Load(),
	}
}

// escapeGlob escapes the characters that Redis glob patterns interpret.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
