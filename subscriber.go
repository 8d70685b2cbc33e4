package redispubsub

import (
	"context"
	"fmt"
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

// Subscriber receives Watermill messages from Redis Pub/Sub channels. In
// classic mode one connection carries all its subscriptions; in sharded mode
// one connection per cluster node. It is safe for concurrent use.
//
// What a caller may rely on:
//   - Subscribe returns once Redis confirmed the subscription: a message
//     published after it returns is delivered (unless the connection is lost
//     meanwhile, see Stats().Reconnects), and none published before it was
//     called.
//   - Every subscription of a topic gets every message; Redis sees one
//     subscriber per topic, whatever the number of local subscriptions.
//   - One message at a time per subscription: the next is sent after Ack;
//     Nack redelivers the same message after NackResendSleep. Messages from
//     one publisher connection on one channel keep their order.
//   - The connection is read continuously. What consumers have not taken
//     yet is held within BufferBytes; only when that is spent does the
//     subscription holding the most lose messages (see OverflowPolicy),
//     counted and logged.
//   - A lost connection is re-established and every topic and pattern
//     resubscribed; what was published meanwhile is lost, and counted where
//     the sequence stamps allow (Stats().Gaps).
//   - A subscription Redis refuses (an ACL) fails its Subscribe at once with
//     an error wrapping ErrSubscriptionRefused; the other topics go on.
//   - Ending a subscription's context, or Close, closes its output channel
//     even when nobody reads it or a message waits for its Ack.
type Subscriber struct {
	config SubscriberConfig
	logger watermill.LoggerAdapter
	id     string

	// ctx is cancelled by Close; it ends every subscription and connection.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // connections and subscription goroutines

	mu     sync.Mutex
	closed bool
	// conns holds the connections by cluster node address ("" in classic
	// mode, and in sharded mode on a single server).
	conns map[string]*connection
	// slots maps hash slots to node addresses in sharded mode on a cluster,
	// and dialNode dials a node.
	slots    *slotMap
	dialNode func(node string) dialFunc
	// initialized holds subscriptions made by SubscribeInitialize until the
	// first Subscribe of their topic takes them over.
	initialized map[string]*subscription

	budget *budget
	// historyReads holds a token per history read under way (Recover), so
	// that the channels a reconnect resubscribes, thousands of them under
	// one pattern, do not all read at once and wait out the client's pool.
	historyReads chan struct{}
	hooks        *hookRunner
	moves        mover // sharded channels on their way to another node
	// stamps reads sequence stamps and positions; nil when gap detection
	// and recovery are off or the Marshaler carries no metadata.
	stamps stampReader
	// directDecode is set when the Marshaler is one of the package's, fast
	// enough to decode a small message on the reader's goroutine.
	directDecode bool

	// closing is set by the first Close; shutDown is closed once it ended
	// the subscriptions and connections.
	closing  atomic.Bool
	shutDown chan struct{}
	stats    subscriberCounters
	dropMu   sync.Mutex
	drops    map[string]uint64 // by topic or pattern

	// Liveness (connection_probe.go): connections are numbered for their probe
	// channels, all of which start with probePrefix; probePublish
	// publishes a probe (a unit test replaces it).
	connections  atomic.Uint64
	probePrefix  []byte
	probePublish func(ctx context.Context, channel, body string) error
	probes       probeCounters
}

// subscriptionKey names what a subscription listens to: a topic, or a
// pattern of topics. Both exclude the ChannelPrefix.
type subscriptionKey struct {
	name    string
	pattern bool
}

type subscriberCounters struct {
	received, decodeFailures, delivered, acked, nacked, dropped, discarded, duplicates,
	reconnects, gaps, possibleGaps, oversized atomic.Uint64
	recovered, unrecovered, historyLost atomic.Uint64 // connection_recovery.go
}

// NewSubscriber returns a Subscriber; logger may be nil. It returns an
// error wrapping ErrInvalidConfig, naming the field, when
// config.Validate does. A Redis that cannot be reached is not an error
// here: the Subscriber keeps trying, and Subscribe reports what it could
// not confirm. Call Close when done with it.
func NewSubscriber(config SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	s, err := newSubscriber(config, logger)
	if err != nil {
		return nil, err
	}
	if cluster, ok := config.Client.(*redis.ClusterClient); ok && config.Sharded {
		s.slots = newSlotMap(cluster)
		s.dialNode = func(node string) dialFunc { return nodeDialer(cluster, node) }
		return s, nil
	}
	dial, err := clientDialer(config.Client, s.id)
	if err != nil {
		s.cancel()
		return nil, err
	}
	s.start(dial)
	return s, nil
}

// newSubscriber returns a Subscriber without connections: NewSubscriber
// gives it those of its Client, a unit test one on a fake socket (start).
func newSubscriber(config SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Subscriber{
		config:       config,
		id:           watermill.NewShortUUID(),
		ctx:          ctx,
		cancel:       cancel,
		conns:        make(map[string]*connection),
		initialized:  make(map[string]*subscription),
		budget:       newBudget(config.BufferBytes),
		historyReads: make(chan struct{}, maxHistoryReadsAtOnce),
		shutDown:     make(chan struct{}),
		drops:        make(map[string]uint64),
	}
	s.logger = logger.With(watermill.LogFields{"component": "redispubsub.Subscriber", "subscriber_id": s.id})
	s.probePrefix, s.probePublish = []byte(config.ChannelPrefix+ProbeTopicPrefix), s.publishProbe
	s.hooks = newHookRunner()
	if stamps, ok := config.Marshaler.(stampReader); ok && (!config.DisableGapDetection || config.Recover) {
		s.stamps = stamps
	}
	_, s.directDecode = config.Marshaler.(codec)
	return s, nil
}

// start makes the connection of a Subscriber in classic mode, or in sharded
// mode on a single server.
func (s *Subscriber) start(dial dialFunc) {
	s.mu.Lock()
	s.conns[""] = newConnection(s, "", dial)
	s.mu.Unlock()
}

// Subscribe returns a channel of the messages published on topic from now
// on. It returns once Redis confirmed the subscription, or with an error when
// one of these comes first: ctx ends (the error wraps ctx's cause),
// SubscribeTimeout passes (ErrSubscribeTimeout), Redis refuses the channel
// (ErrSubscriptionRefused) or the connection (ErrConnectionRefused), or the
// Subscriber is closed (ErrSubscriberClosed). The channel is closed when ctx ends, the
// Subscriber closes, or Redis refuses the channel later (after a
// reconnect). Subscribe may be called concurrently, also for one topic:
// each call gets a channel of its own with every message.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.subscribe(ctx, subscriptionKey{name: topic}, nil)
}

// handler receives a subscription's messages in place of its output
// channel; see subscribeHandler.
type handler struct {
	handle func(*message.Message)
	ended  func()
}

// subscribeHandler is Subscribe for the EventTarget: instead of handing
// messages over a channel, which needs a goroutine of the caller's for
// every idle topic, the subscription calls handle with each message on its
// own delivery goroutine (which runs only while messages are queued), one at
// a time; handle Acks or Nacks it. When it returns nil, ended is called once
// the subscription ended (ctx done, Close, Redis refused it later), on a
// goroutine of the Subscriber's; when it returns an error, never.
func (s *Subscriber) subscribeHandler(ctx context.Context, topic string, handle func(*message.Message), ended func()) error {
	_, err := s.subscribe(ctx, subscriptionKey{name: topic}, &handler{handle: handle, ended: ended})
	return err
}

// SubscribePattern is Subscribe for every topic that matches the Redis glob
// pattern (PSUBSCRIBE; ChannelPrefix is prepended, its glob characters
// escaped). Each message carries its topic in metadata under MetadataTopic.
// It returns ErrShardedPattern in sharded mode.
func (s *Subscriber) SubscribePattern(ctx context.Context, pattern string) (<-chan *message.Message, error) {
	if s.config.Sharded {
		return nil, fmt.Errorf("%w: %q", ErrShardedPattern, pattern)
	}
	return s.subscribe(ctx, subscriptionKey{name: pattern, pattern: true}, nil)
}

// SubscribeInitialize subscribes to topic ahead of time, so that messages
// published before the first Subscribe of topic are kept (within
// BufferBytes) and handed to that Subscribe. It returns once Redis confirmed
// the subscription. Calling it again before that Subscribe only waits for
// the confirmation. Its errors are those of Subscribe, SubscribeTimeout
// bounding the wait (it takes no context). It implements
// message.SubscribeInitializer.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	key := subscriptionKey{name: topic}
	if err := reservedTopic(topic); err != nil {
		return err
	}
	if err := s.loadSlots(context.Background(), key); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrSubscriberClosed
	}
	sn, ok := s.initialized[topic]
	if ok && sn.isDone() {
		// Refused since (a permission revoked): start over.
		delete(s.initialized, topic)
		sn.discard()
		ok = false
	}
	var conn *connection
	if !ok {
		sn = newSubscription(s, key)
		s.initialized[topic] = sn
		var err error
		if conn, err = s.connectionFor(key); err != nil {
			delete(s.initialized, topic)
			s.mu.Unlock()
			s.budget.forget(sn)
			return err
		}
	}
	s.mu.Unlock()
	if conn != nil {
		if err := s.addTo(conn, sn); err != nil {
			s.mu.Lock()
			if s.initialized[topic] == sn {
				delete(s.initialized, topic)
			}
			s.mu.Unlock()
			return err
		}
	}
	err := s.await(context.Background(), sn)
	if err != nil && sn.failed() != nil {
		// Refused: the next call starts over.
		s.mu.Lock()
		if s.initialized[topic] == sn {
			delete(s.initialized, topic)
		}
		s.mu.Unlock()
		sn.discard()
	}
	return err
}

func (s *Subscriber) subscribe(ctx context.Context, key subscriptionKey, h *handler) (<-chan *message.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("redispubsub: subscribe to %q: %w", key.name, context.Cause(ctx))
	}
	if err := reservedTopic(key.name); err != nil {
		return nil, err
	}
	if err := s.loadSlots(ctx, key); err != nil {
		return nil, err
	}
	if !key.pattern {
		if out, ok, err := s.takeInitialized(ctx, key.name, h); ok {
			return out, err
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrSubscriberClosed
	}
	conn, err := s.connectionFor(key)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	sn := newSubscription(s, key)
	sn.handleWith(h)
	sn.attach(ctx)
	s.mu.Unlock()
	if err := s.addTo(conn, sn); err != nil {
		sn.end()
		return nil, err
	}

	if err := s.await(ctx, sn); err != nil {
		sn.end()
		return nil, err
	}
	sn.onEnded(h)
	return sn.out, nil
}

// loadSlots loads the cluster's slot map, in sharded mode on a cluster,
// unless it is loaded: which node carries key's channel depends on it. It
// waits at most SubscribeTimeout.
func (s *Subscriber) loadSlots(ctx context.Context, key subscriptionKey) error {
	if s.slots == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.config.SubscribeTimeout)
	defer cancel()
	if err := s.slots.ensure(ctx); err != nil {
		return fmt.Errorf("redispubsub: subscribe to %q: %w", key.name, err)
	}
	return nil
}

// takeInitialized hands the subscription SubscribeInitialize made for topic
// to this Subscribe, once it is confirmed. When ctx ends first, the
// subscription and what it holds stay for the next Subscribe. ok is false
// when there is none.
func (s *Subscriber) takeInitialized(ctx context.Context, topic string, h *handler) (out <-chan *message.Message, ok bool, err error) {
	for {
		s.mu.Lock()
		sn, held := s.initialized[topic]
		s.mu.Unlock()
		if !held {
			return nil, false, nil
		}
		if err := s.await(ctx, sn); err != nil && sn.failed() == nil {
			return nil, true, err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, true, ErrSubscriberClosed
		}
		if s.initialized[topic] != sn {
			s.mu.Unlock()
			continue // another Subscribe took it, or it was refused
		}
		delete(s.initialized, topic)
		if sn.isDone() {
			// Refused, at once or since it started: start over, with a
			// SUBSCRIBE of this call's own.
			s.mu.Unlock()
			sn.discard()
			return nil, false, nil
		}
		sn.handleWith(h)
		sn.attach(ctx)
		s.mu.Unlock()
		sn.onEnded(h)
		return sn.out, true, nil
	}
}

// await waits until sn receives what is published, or fails.
func (s *Subscriber) await(ctx context.Context, sn *subscription) error {
	timer := time.NewTimer(s.config.SubscribeTimeout)
	defer timer.Stop()
	select {
	case <-sn.ready:
		return sn.failed()
	case <-s.ctx.Done():
		return ErrSubscriberClosed
	case <-ctx.Done():
		return fmt.Errorf("redispubsub: subscribe to %q: %w%s", sn.key.name, context.Cause(ctx), s.lastDialError(sn))
	case <-timer.C:
		return fmt.Errorf("%w: %q after %v%s", ErrSubscribeTimeout, sn.key.name, s.config.SubscribeTimeout, s.lastDialError(sn))
	}
}

// lastDialError describes why sn's connection is down, if it is.
func (s *Subscriber) lastDialError(sn *subscription) string {
	c := sn.connection()
	if c == nil {
		return ""
	}
	if err := c.lastDialError(); err != nil {
		return fmt.Sprintf(" (last connection attempt: %v)", err)
	}
	return ""
}

// addTo adds sn to conn, or, when conn was closed meanwhile (an idle node
// connection in sharded mode), to the connection that carries its channel
// now.
func (s *Subscriber) addTo(conn *connection, sn *subscription) error {
	name := s.redisName(sn.key)
	for !conn.add(sn, name) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrSubscriberClosed
		}
		var err error
		conn, err = s.connectionFor(sn.key)
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// redisName is the channel or pattern that Redis knows key by.
func (s *Subscriber) redisName(key subscriptionKey) string {
	if key.pattern {
		return escapeGlob(s.config.ChannelPrefix) + key.name
	}
	return s.config.ChannelPrefix + key.name
}

// connectionFor returns the connection that carries key's Redis
// subscription. Called with mu held.
func (s *Subscriber) connectionFor(key subscriptionKey) (*connection, error) {
	if s.slots == nil {
		return s.conns[""], nil
	}
	node, err := s.slots.owner(s.redisName(key))
	if err != nil {
		return nil, fmt.Errorf("redispubsub: subscribe to %q: %w", key.name, err)
	}
	c := s.conns[node]
	if c == nil {
		c = newConnection(s, node, s.dialNode(node))
		s.conns[node] = c
	}
	return c, nil
}

// leave removes an ended subscription from its connection.
func (s *Subscriber) leave(sn *subscription) {
	s.mu.Lock()
	if s.initialized[sn.key.name] == sn && !sn.key.pattern {
		delete(s.initialized, sn.key.name)
	}
	s.mu.Unlock()
	// A sharded channel may move to another connection while its
	// subscription ends: remove it from whichever carries it.
	for c := sn.connection(); c != nil; {
		c.remove(sn)
		if now := sn.connection(); now != c {
			c = now
			continue
		}
		break
	}
}

// connectionIdle is told by a connection that it carries nothing any more.
// In sharded mode on a cluster it is closed. Called with c.mu held.
func (s *Subscriber) connectionIdle(c *connection) {
	if c.node == "" || !c.empty() {
		return
	}
	s.wg.Add(1) // a goroutine of a connection counts already: Close has not returned
	go func() {
		defer s.wg.Done()
		s.closeIfIdle(c)
	}()
}

// Close ends every subscription, closing their output channels, closes the
// Subscriber's connections, and waits until all its goroutines have returned
// and every hook called before it (OnReconnect, and OnGap for every gap
// counted) has run. It is idempotent and never closes
// SubscriberConfig.Client. Close called from a hook does not wait for the
// hooks (nor for another Close under way): it returns before that hook does,
// and the hooks queued behind it still run.
func (s *Subscriber) Close() error {
	fromHook := s.hooks.inHook()
	switch {
	case s.closing.CompareAndSwap(false, true):
		s.shutdown()
		s.hooks.close()
		close(s.shutDown)
	case fromHook:
		return nil // the Close under way waits for this hook
	default:
		<-s.shutDown
	}
	if !fromHook {
		<-s.hooks.close()
	}
	return nil
}

// shutdown ends every subscription and connection and waits for their
// goroutines; the first Close does it.
func (s *Subscriber) shutdown() {
	s.mu.Lock()
	s.closed = true
	for _, sn := range s.initialized {
		sn.discard()
	}
	s.initialized = nil
	conns := make([]*connection, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.cancel()
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	s.wg.Wait()
	s.logger.Debug("Subscriber closed", nil)
}

// Stats returns the Subscriber's counters since it was made. It may be
// called at any time, concurrently, also after Close; DroppedByTopic is a
// new map on every call, the caller's to keep (nil while nothing was
// dropped).
func (s *Subscriber) Stats() SubscriberStats {
	c := &s.stats
	stats := SubscriberStats{
		Received:       c.received.Load(),
		DecodeFailures: c.decodeFailures.Load(),
		Delivered:      c.delivered.Load(),
		Acked:          c.acked.Load(),
		Nacked:         c.nacked.Load(),
		Dropped:        c.dropped.Load(),
		Discarded:      c.discarded.Load(),
		Reconnects:     c.reconnects.Load(),
		Gaps:           c.gaps.Load(),
		PossibleGaps:   c.possibleGaps.Load(),
		Duplicates:     c.duplicates.Load(),
		Oversized:      c.oversized.Load(),
		Recovered:      c.recovered.Load(),
		Unrecovered:    c.unrecovered.Load(),
		HistoryLost:    c.historyLost.Load(),
		BufferedBytes:  s.budget.used.Load(),
	}
	s.probeStats(&stats)
	s.dropMu.Lock()
	if len(s.drops) > 0 {
		stats.DroppedByTopic = make(map[string]uint64, len(s.drops))
		for topic, n := range s.drops {
			stats.DroppedByTopic[topic] = n
		}
	}
	s.dropMu.Unlock()
	return stats
}

// countDrop counts a message lost to the buffer or QueueSize.
func (s *Subscriber) countDrop(topic string) {
	s.stats.dropped.Add(1)
	s.dropMu.Lock()
	s.drops[topic]++
	s.dropMu.Unlock()
}

// escapeGlob escapes the bytes that Redis glob patterns interpret. It works
// on bytes, not runes: a channel prefix need not be UTF-8.
func escapeGlob(s string) string {
	const special = `*?[]\`
	if !strings.ContainsAny(s, special) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(special, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var _ message.Subscriber = (*Subscriber)(nil)
var _ message.SubscribeInitializer = (*Subscriber)(nil)
