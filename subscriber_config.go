package redispubsub

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// The defaults of SubscriberConfig and PublisherConfig.
const (
	// DefaultBufferBytes is SubscriberConfig.BufferBytes: 64 MiB, twice
	// Redis's default hard limit for a Pub/Sub client's output buffer
	// (client-output-buffer-limit pubsub 32mb 8mb 60), so that a Subscriber
	// holds every backlog that Redis would have held for a raw client.
	DefaultBufferBytes = 64 << 20
	// DefaultMaxMessageBytes is the default of PublisherConfig and
	// SubscriberConfig.MaxMessageBytes: 8 MiB, a quarter of Redis's default
	// Pub/Sub output-buffer hard limit, which a single larger message would
	// break for every subscriber of its channel.
	DefaultMaxMessageBytes = 8 << 20
	// DefaultNackResendSleep is SubscriberConfig.NackResendSleep.
	DefaultNackResendSleep = 100 * time.Millisecond
	// DefaultSubscribeTimeout is SubscriberConfig.SubscribeTimeout.
	DefaultSubscribeTimeout = 30 * time.Second
	// DefaultHealthCheckInterval is SubscriberConfig.HealthCheckInterval.
	DefaultHealthCheckInterval = 3 * time.Second
	// DefaultReconnectBackoffMin and DefaultReconnectBackoffMax bound the
	// wait between connection attempts: a Subscriber is back at most about
	// 0.6 s after Redis is.
	DefaultReconnectBackoffMin = 50 * time.Millisecond
	DefaultReconnectBackoffMax = 500 * time.Millisecond
	// DefaultProbeInterval is SubscriberConfig.ProbeInterval: a deaf
	// connection is found at most one and a half intervals (7.5 s) after
	// it went deaf, for one PUBLISH per connection every 5 s.
	DefaultProbeInterval = 5 * time.Second
)

// OverflowPolicy says which message a subscription loses when the
// Subscriber's buffer (BufferBytes) is spent and it holds the most, or when
// its own QueueSize cap is reached. Either way the Subscriber keeps reading
// the socket, so Redis never disconnects it for its output buffer, and every
// lost message is counted in SubscriberStats.Dropped (and per topic) and
// logged.
type OverflowPolicy int

const (
	// DropNewest loses the most recent message (the arriving one, or the
	// last one queued): what was queued before is delivered, and the
	// consumer sees an in-order stream with a hole. The heavier
	// subscriptions lose messages for an arriving one only when that makes
	// room for it (as far as the 64 heaviest tell). The default.
	DropNewest OverflowPolicy = iota
	// DropOldest loses the oldest queued message: the consumer catches up
	// with the most recent messages.
	DropOldest
)

// String returns the policy's name, "DropNewest" or "DropOldest", or
// "OverflowPolicy(n)" for any other value (which Validate refuses).
func (p OverflowPolicy) String() string {
	switch p {
	case DropNewest:
		return "DropNewest"
	case DropOldest:
		return "DropOldest"
	default:
		return fmt.Sprintf("OverflowPolicy(%d)", int(p))
	}
}

// ReconnectEvent describes a connection the Subscriber re-established after
// losing it. Messages published between the loss and the resubscription are
// lost (Redis Pub/Sub keeps nothing).
type ReconnectEvent struct {
	// Cause is the error that ended the previous connection; it wraps
	// ErrConnectionDeaf when a liveness probe did not arrive.
	Cause error
	// Attempts counts the connection attempts it took, the successful one
	// included.
	Attempts int
	// Downtime is the time from the loss to the confirmed resubscription.
	Downtime time.Duration
	// Topics and Patterns count what Redis confirmed resubscribed; Refused
	// counts what it refused (an ACL changed meanwhile): those
	// subscriptions ended with an error wrapping ErrSubscriptionRefused.
	Topics, Patterns, Refused int
	// Node is the address of the cluster node of the connection in sharded
	// mode; empty otherwise.
	Node string
}

// SubscriberConfig configures a Subscriber. The zero value of every field but
// Client is a valid default.
type SubscriberConfig struct {
	// Client opens the Subscriber's Pub/Sub connections. Required; a
	// *redis.Client (plain or failover) or a *redis.ClusterClient. The
	// Subscriber never closes it.
	Client redis.UniversalClient

	// ChannelPrefix is prepended to every topic and pattern to form the Redis
	// channel (glob characters in it are escaped for patterns). Default: "".
	ChannelPrefix string

	// Marshaler decodes message bodies. Default: JSONEnvelopeMarshaler{}.
	Marshaler Marshaler

	// Sharded subscribes with SSUBSCRIBE (Redis 7 sharded Pub/Sub): on a
	// cluster, one connection per node that owns a subscribed channel's
	// slot, following slot migrations and failovers. It receives what a
	// Publisher with Sharded set publishes (SPUBLISH), not PUBLISH.
	// SubscribePattern is refused in this mode (Redis has no sharded
	// patterns). Default: false.
	Sharded bool

	// BufferBytes bounds the bytes of received messages that all the
	// Subscriber's subscriptions hold while their consumers are busy, and
	// what SubscribeInitialize holds. While it is not spent nothing is lost;
	// when it is, the subscription holding the most bytes loses messages by
	// Overflow. A message larger than all of it is dropped at once, and no
	// other subscription loses anything for it. Plan for this much memory,
	// plus about 200 bytes per buffered message. Default: DefaultBufferBytes
	// (64 MiB).
	BufferBytes int64

	// QueueSize, when positive, also caps the messages each subscription
	// holds; past it the subscription loses messages by Overflow. Default:
	// 0, no cap (only BufferBytes bounds what is held).
	QueueSize int

	// Overflow says which message a subscription loses when it must lose
	// one. Default: DropNewest.
	Overflow OverflowPolicy

	// MaxMessageBytes skips (counts in SubscriberStats.Oversized and logs)
	// every body larger than this, without decoding it. Default:
	// DefaultMaxMessageBytes (8 MiB); a negative value removes the limit.
	MaxMessageBytes int

	// MaxInFlight is how many messages of one subscription may be handed
	// out before their Acks. With 1 (the default), the next message comes
	// after the Ack, in order. With more, a router works on several at
	// once: a Nack redelivers that message (after NackResendSleep) without
	// holding up the others, each message's context ends with its own Ack
	// or Nack, and messages in flight have no order among themselves unless
	// OrderingKey gives them one. Messages in flight and waiting for their
	// key count in BufferBytes. The EventTarget's listeners of a topic stay
	// one after another whatever it says. Default: 1.
	MaxInFlight int

	// OrderingKey, with MaxInFlight above 1, keeps order where it matters:
	// messages with the same key are handed out one after another, each
	// after the previous one's Ack, in arrival order (a Nacked message comes
	// again before the next of its key); messages with different keys, or
	// an empty key, run concurrently. It is called once per message and
	// subscription, on the subscription's delivery goroutine; it must not
	// modify the message. Default: nil (no order among messages in flight).
	OrderingKey func(*message.Message) string

	// NackResendSleep is how long a subscription waits after a Nack before it
	// redelivers the same message. Default: DefaultNackResendSleep (100ms); a
	// negative value redelivers at once.
	NackResendSleep time.Duration

	// SubscribeTimeout bounds how long Subscribe waits for Redis to confirm a
	// subscription (the context passed to Subscribe can end it sooner).
	// Default: DefaultSubscribeTimeout (30s).
	SubscribeTimeout time.Duration

	// HealthCheckInterval bounds how long a connection that stopped sending
	// bytes without closing goes unnoticed: after a quarter of it in silence
	// the Subscriber sends a PING, and when the silence lasts the whole
	// interval (at least 3/4 of it) it drops the connection and reconnects.
	// Bytes arriving count, so a large message on a slow link is not
	// silence. Default: DefaultHealthCheckInterval (3s).
	HealthCheckInterval time.Duration

	// ReconnectBackoffMin and ReconnectBackoffMax bound the wait between
	// connection attempts, which doubles from Min up to Max, with jitter.
	// Defaults: DefaultReconnectBackoffMin and DefaultReconnectBackoffMax
	// (50ms and 500ms).
	ReconnectBackoffMin, ReconnectBackoffMax time.Duration

	// OnReconnect, when set, is called after every re-established
	// connection, once Redis confirmed that all its topics and patterns were
	// resubscribed. Hooks run one at a time, in order, on a goroutine of
	// their own: a slow hook delays other hooks, never the reading, and a
	// hook may call Subscribe or Close. Close returns once the hooks called
	// before it have run (unless it is called from a hook).
	OnReconnect func(ReconnectEvent)

	// DisableGapDetection stops the Subscriber from reading the sequence
	// stamps of Publishers (see MetadataSequence) to count, log and report
	// the messages it never received. Gap detection works with the
	// JSONEnvelopeMarshaler and the MsgpackMarshaler; bodies without a stamp
	// (TypeScript peers, RawJSONMarshaler) are never counted as gaps.
	// Default: false (detection on).
	DisableGapDetection bool

	// OnGap, when set, is called for every gap found, with the rules of
	// OnReconnect.
	OnGap func(GapEvent)

	// Recover fills what the Subscriber missed on a channel whose messages
	// carry a position (a Publisher with PublisherConfig.History): after a
	// reconnect, a slot move, or an offset that skips, it reads the
	// channel's history (a MULTI of HMGET and LRANGE, through Client) after
	// the last offset it routed, and delivers what it missed in offset
	// order, before the live messages that arrived meanwhile, without
	// duplicates. The live messages held during the read count against
	// BufferBytes (one that would exceed it is read from the history
	// again); what the read delivers is queued at once, as a burst of live
	// messages is. What the history no longer holds is counted
	// (SubscriberStats.Unrecovered, HistoryLost) and reported to OnGap.
	// A pattern subscription recovers each channel it matched, up to 4,096
	// per pattern (past that, a channel's messages are delivered as they
	// come). Messages without a position are as without it. Needs read
	// access to the history keys (see History). Default: false.
	Recover bool

	// Liveness and readiness (connection_probe.go, readiness.go).

	// ProbeInterval is how often each connection proves end to end that it
	// receives what is published: the Subscriber publishes a probe through
	// Client on a channel of the connection's own (see the README's wire
	// format) and, when a probe Redis accepted has not arrived on the
	// connection half an interval later, drops the connection as deaf (a
	// failover behind a fixed address, a Sentinel split brain): found at
	// most one and a half intervals after it went deaf. It reconnects
	// (re-resolving the master or the slots) and reports it through
	// OnReconnect with a Cause wrapping ErrConnectionDeaf. Probes are never
	// delivered nor counted as messages; they cost one PUBLISH (SPUBLISH in
	// sharded mode) per connection per interval. A probe arrives behind
	// what Redis queued for the connection: keep the interval well above
	// twice the time a backlog takes to read (with 10 ms under a load of
	// 90,000 messages a second, a busy connection was taken for deaf).
	// Default: DefaultProbeInterval (5s); a negative value turns probes off.
	ProbeInterval time.Duration

	// OnDisconnect, when set, is called when a live connection is lost,
	// before it is re-established (OnReconnect follows once it is), with the
	// rules of OnReconnect: a cache built on what the Subscriber received
	// may be stale from then on. It is not called for Close.
	OnDisconnect func(DisconnectEvent)
}

// minHealthCheckInterval keeps the health check from flooding Redis with
// PINGs (and its ticker from a zero period).
const minHealthCheckInterval = 10 * time.Millisecond

// minProbeInterval keeps the probes from flooding Redis with PUBLISHes.
const minProbeInterval = 10 * time.Millisecond

func (c *SubscriberConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = JSONEnvelopeMarshaler{}
	}
	if c.BufferBytes == 0 {
		c.BufferBytes = DefaultBufferBytes
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1
	}
	if c.NackResendSleep == 0 {
		c.NackResendSleep = DefaultNackResendSleep
	}
	if c.SubscribeTimeout == 0 {
		c.SubscribeTimeout = DefaultSubscribeTimeout
	}
	if c.HealthCheckInterval == 0 {
		c.HealthCheckInterval = DefaultHealthCheckInterval
	}
	if c.ReconnectBackoffMin == 0 {
		c.ReconnectBackoffMin = DefaultReconnectBackoffMin
	}
	if c.ReconnectBackoffMax == 0 {
		c.ReconnectBackoffMax = max(DefaultReconnectBackoffMax, c.ReconnectBackoffMin)
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
}

// Validate reports what is wrong with the config, wrapping ErrInvalidConfig.
// A zero field stands for its default, as in the constructor.
func (c SubscriberConfig) Validate() error {
	c.setDefaults()
	switch {
	case c.Client == nil:
		return fmt.Errorf("%w: SubscriberConfig.Client is required", ErrInvalidConfig)
	case c.BufferBytes < 0:
		return fmt.Errorf("%w: SubscriberConfig.BufferBytes must be positive, got %d", ErrInvalidConfig, c.BufferBytes)
	case c.QueueSize < 0:
		return fmt.Errorf("%w: SubscriberConfig.QueueSize must not be negative, got %d", ErrInvalidConfig, c.QueueSize)
	case c.Overflow != DropNewest && c.Overflow != DropOldest:
		return fmt.Errorf("%w: unknown SubscriberConfig.Overflow %v", ErrInvalidConfig, c.Overflow)
	case c.MaxInFlight < 0:
		return fmt.Errorf("%w: SubscriberConfig.MaxInFlight must not be negative, got %d", ErrInvalidConfig, c.MaxInFlight)
	case c.SubscribeTimeout < 0:
		return fmt.Errorf("%w: SubscriberConfig.SubscribeTimeout must not be negative", ErrInvalidConfig)
	case c.HealthCheckInterval < minHealthCheckInterval:
		return fmt.Errorf("%w: SubscriberConfig.HealthCheckInterval must be at least %v, got %v",
			ErrInvalidConfig, minHealthCheckInterval, c.HealthCheckInterval)
	case c.ReconnectBackoffMin < 0 || c.ReconnectBackoffMax < c.ReconnectBackoffMin:
		return fmt.Errorf("%w: SubscriberConfig.ReconnectBackoffMax (%v) must be at least ReconnectBackoffMin (%v)",
			ErrInvalidConfig, c.ReconnectBackoffMax, c.ReconnectBackoffMin)
	case c.ProbeInterval > 0 && c.ProbeInterval < minProbeInterval:
		return fmt.Errorf("%w: SubscriberConfig.ProbeInterval must be at least %v (or negative: off), got %v",
			ErrInvalidConfig, minProbeInterval, c.ProbeInterval)
	}
	return nil
}
