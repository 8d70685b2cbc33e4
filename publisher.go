package redispubsub

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// PublisherConfig configures a Publisher. The zero value of every field but
// Client is a valid default.
type PublisherConfig struct {
	// Client sends the PUBLISH (or SPUBLISH) commands. Required. Any
	// redis.UniversalClient works: *redis.Client, a failover client, or
	// *redis.ClusterClient, on which PUBLISH reaches subscribers on every
	// node and the messages of a channel all go through the node of the
	// channel's hash slot, in order. (*redis.Ring is not supported: its
	// shards do not share Pub/Sub.) The Publisher never closes it.
	//
	// go-redis honours a message context's cancellation while a command is
	// on the wire only when the client's Options.ContextTimeoutEnabled is
	// true; otherwise a dead connection holds Publish up to the client's
	// ReadTimeout/WriteTimeout.
	Client redis.UniversalClient

	// ChannelPrefix is prepended to every topic to form the Redis channel,
	// e.g. "myapp:events:". Default: "" (raw topics, as a TypeScript
	// peer without a prefix uses). Set one in a shared Redis.
	ChannelPrefix string

	// Marshaler encodes messages. Default: JSONEnvelopeMarshaler{}.
	Marshaler Marshaler

	// DisableSequenceNumbers stops the Publisher from stamping each message
	// with its publisher id and a per-channel sequence number (metadata
	// MetadataPublisher and MetadataSequence), with which Subscribers count
	// the messages they never received (with History, the offset does
	// that). Default: false (stamped).
	DisableSequenceNumbers bool

	// Sharded publishes with SPUBLISH (Redis 7 sharded Pub/Sub) instead of
	// PUBLISH: Subscribers with SubscriberConfig.Sharded (SSUBSCRIBE)
	// receive the messages, classic ones do not. On a *redis.ClusterClient
	// each message goes to the node that owns its channel's hash slot and
	// stays inside that shard, instead of being broadcast to every node over
	// the cluster bus, and the Publisher keeps one pipeline in flight per
	// node rather than one in all, so that writes scale with the number of
	// shards; each channel keeps its order. On a single server (Redis 7 or
	// later) it works as classic mode does, with SPUBLISH. Default: false
	// (PUBLISH, one pipeline in flight).
	Sharded bool

	// MaxMessageBytes refuses a Publish call when the encoded body of one
	// of its messages is larger than this: nothing of the call is sent, and
	// the error wraps ErrMessageTooLarge. Redis disconnects a subscriber
	// whose Pub/Sub output buffer passes its hard limit (32 MB by default),
	// so one larger message would cut off every subscriber of its channel.
	// Default: DefaultMaxMessageBytes (8 MiB); a negative value removes the
	// limit.
	MaxMessageBytes int

	// History, when History.Size is set, keeps a history of each channel's
	// latest messages in Redis, from which Subscribers with
	// SubscriberConfig.Recover fill what they missed and SubscribeFrom
	// starts: each message is appended to its channel's history and
	// published in one atomic step (a script, EVALSHA, one run for the
	// messages of a channel in a pipeline), stamped with its offset in the
	// channel (MetadataOffset:
	// consecutive from 1, assigned by Redis, one sequence for every
	// Publisher of the channel) and the history's epoch (MetadataEpoch).
	// The offset numbers the message: such messages carry no sequence
	// stamp (MetadataSequence), Subscribers count gaps by offset. The
	// history's keys (see historyKeyPrefix) share the channel's hash
	// slot. It needs the JSONEnvelopeMarshaler, and an ACL that lets the
	// Publisher run EVALSHA and SCRIPT LOAD and write the keys "rps:*".
	// Default: the zero value, no history (PUBLISH alone).
	History History
}

func (c *PublisherConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = JSONEnvelopeMarshaler{}
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	c.History.setDefaults()
}

// Validate reports what is wrong with the config, wrapping ErrInvalidConfig.
// A zero field stands for its default, as in the constructor.
func (c PublisherConfig) Validate() error {
	c.setDefaults()
	if c.Client == nil {
		return fmt.Errorf("%w: PublisherConfig.Client is required", ErrInvalidConfig)
	}
	return c.History.validate(c.Marshaler)
}

// Publisher publishes Watermill messages on Redis Pub/Sub channels. It is
// safe for concurrent use: concurrent Publish calls are coalesced into shared
// pipelines, sent one after the other (the next once Redis answered the
// previous), so that messages reach Redis in the order their Publish calls
// were made. (A pipeline abandoned because its callers' contexts ended may
// still run after the next; its callers got an error.) With a History there
// are two such sequences of pipelines: calls made at the same time may reach
// Redis in either order, and a call reaches it after every call that
// returned before it began; the messages of one call stay in order.
//
// In sharded mode on a cluster (PublisherConfig.Sharded with a
// *redis.ClusterClient) there is such a sequence of pipelines per node, and
// the nodes' pipelines run in parallel: the messages of one channel reach
// Redis in the order of their Publish calls (with a History, in the order
// said above), those of channels on different nodes may overtake each
// other. A channel stays with the node its calls
// are queued for while any of them is queued or on the wire, so that a slot
// migration does not reorder it (go-redis follows the MOVED).
type Publisher struct {
	config  PublisherConfig
	logger  watermill.LoggerAdapter
	id      string               // stamped in MetadataPublisher
	cluster *redis.ClusterClient // set in sharded mode on a cluster: a queue per node

	mu        sync.Mutex
	queues    map[queueKey]*nodeQueue  // by node address ("" unless cluster is set) and lane
	routes    map[string]*channelRoute // with cluster: the node of each channel with calls in a queue
	sequences map[string]channelStream // sequence per channel
	closed    bool
	done      sync.WaitGroup // the queues' writer goroutines

	published     atomic.Uint64
	noSubscribers atomic.Uint64
	failed        atomic.Uint64
}

// NewPublisher returns a Publisher; logger may be nil.
func NewPublisher(config PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	p := &Publisher{
		config:    config,
		id:        watermill.NewShortUUID(),
		queues:    make(map[queueKey]*nodeQueue),
		sequences: make(map[string]channelStream),
	}
	if cluster, ok := config.Client.(*redis.ClusterClient); ok && config.Sharded {
		p.cluster = cluster
		p.routes = make(map[string]*channelRoute)
	}
	p.logger = logger.With(watermill.LogFields{"component": "redispubsub.Publisher", "publisher_id": p.id})
	return p, nil
}

// Publish sends msgs to the channel ChannelPrefix+topic, in order, and
// returns after Redis answered for every one of them. All messages are
// encoded before anything is sent: an encoding error, or a body larger than
// MaxMessageBytes (ErrMessageTooLarge), sends nothing. Publish returns early
// with the context's error when the context of any message ends first;
// messages already on the wire may still arrive. A nil error means Redis
// accepted every message; it does not mean anyone was subscribed (Redis
// Pub/Sub keeps nothing): Stats counts the messages that reached no
// subscriber. A channel that Redis refuses (an ACL without it: NOPERM) has
// every message of the call refused, and the error wraps
// ErrPublishRefused; other callers' messages are not affected. A topic that
// starts with ProbeTopicPrefix is refused before anything is sent: the error
// wraps ErrReservedTopic and the messages count as Failed.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := reservedTopic(topic); err != nil {
		p.failed.Add(uint64(len(msgs)))
		return err
	}
	return p.publish(topic, msgs) // publisher_send.go
}

// Close stops accepting messages: Publish then returns ErrPublisherClosed.
// It waits until the calls already accepted have been answered. Close is
// idempotent and never closes PublisherConfig.Client.
func (p *Publisher) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	for _, q := range p.queues {
		q.wake.Broadcast()
	}
	p.mu.Unlock()
	p.done.Wait()
	if !already {
		p.logger.Debug("Publisher closed", nil)
	}
	return nil
}

// Stats returns the Publisher's counters since it was made.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{
		Published:     p.published.Load(),
		NoSubscribers: p.noSubscribers.Load(),
		Failed:        p.failed.Load(),
	}
}
