package redispubsub

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// OverflowPolicy says what a subscription does with a message that arrives
// while its queue is full. Either way the Subscriber keeps reading the socket,
// so Redis never disconnects it for its output buffer, and every lost message
// is counted in SubscriberStats.Dropped and logged.
type OverflowPolicy int

const (
	// DropNewest refuses the arriving message: what was queued is delivered,
	// and the consumer sees an in-order stream with a hole. The default.
	DropNewest OverflowPolicy = iota
	// DropOldest discards the oldest queued message to make room: the
	// consumer catches up with the most recent messages.
	DropOldest
)

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
	// Cause is the error that ended the previous connection.
	Cause error
	// Attempts counts the connection attempts it took, the successful one
	// included.
	Attempts int
	// Downtime is the time from the loss to the confirmed resubscription.
	Downtime time.Duration
	// Topics and Patterns count what was resubscribed.
	Topics, Patterns int
}

// SubscriberConfig configures a Subscriber. The zero value of every field but
// Client is a valid default.
type SubscriberConfig struct {
	// Client opens the Subscriber's one Pub/Sub connection. Required; any
	// redis.UniversalClient. The Subscriber never closes it.
	Client redis.UniversalClient

	// ChannelPrefix is prepended to every topic and pattern to form the Redis
	// channel (glob characters in it are escaped for patterns). Default: "".
	ChannelPrefix string

	// Marshaler decodes message bodies. Default: JSONEnvelopeMarshaler{}.
	Marshaler Marshaler

	// QueueSize bounds, in messages, what each subscription holds while its
	// consumer is busy, and what SubscribeInitialize holds for the first
	// Subscribe. Default: 1024.
	QueueSize int

	// Overflow says what happens to a message that finds its queue full.
	// Default: DropNewest.
	Overflow OverflowPolicy

	// NackResendSleep is how long a subscription waits after a Nack before it
	// redelivers the same message. Default: 100ms; a negative value
	// redelivers at once.
	NackResendSleep time.Duration

	// SubscribeTimeout bounds how long Subscribe waits for Redis to confirm a
	// subscription (the context passed to Subscribe can end it sooner).
	// Default: 30s.
	SubscribeTimeout time.Duration

	// HealthCheckInterval bounds how long a connection that stopped answering
	// without closing goes unnoticed: after a quarter of it in silence the
	// Subscriber sends a PING, and when the silence lasts the whole interval
	// (at least 3/4 of it) it drops the connection and reconnects. A new
	// connection attempt to a silent server is bounded by the client's
	// DialTimeout and ReadTimeout, not by this interval. Default: 3s.
	HealthCheckInterval time.Duration

	// ReconnectBackoffMin and ReconnectBackoffMax bound the wait between
	// connection attempts, which doubles from Min up to Max, with jitter.
	// Defaults: 50ms and 500ms, so that a Subscriber is back at most about
	// 0.6s after Redis is.
	ReconnectBackoffMin, ReconnectBackoffMax time.Duration

	// OnReconnect, when set, is called after every re-established
	// connection, once Redis confirmed that all topics and patterns were
	// resubscribed. It runs on the Subscriber's reading goroutine: keep it
	// short, and do not call the Subscriber's Subscribe or Close from it
	// (they wait for that goroutine); start a goroutine for that.
	OnReconnect func(ReconnectEvent)

	// DisableGapDetection stops the Subscriber from reading the sequence
	// stamps of Publishers (see MetadataSequence) to count, log and report
	// the messages it never received. Gap detection works with the
	// JSONEnvelopeMarshaler and the MsgpackMarshaler; bodies without a stamp
	// (TypeScript peers, RawJSONMarshaler) are never counted as gaps.
	// Default: false (detection on).
	DisableGapDetection bool

	// OnGap, when set, is called for every gap found, on the Subscriber's
	// reading goroutine, like OnReconnect and with the same rules.
	OnGap func(GapEvent)
}

// minHealthCheckInterval keeps the health check from flooding Redis with
// PINGs (and its ticker from a zero period).
const minHealthCheckInterval = 10 * time.Millisecond

func (c *SubscriberConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = JSONEnvelopeMarshaler{}
	}
	if c.QueueSize == 0 {
		c.QueueSize = 1024
	}
	if c.NackResendSleep == 0 {
		c.NackResendSleep = 100 * time.Millisecond
	}
	if c.SubscribeTimeout == 0 {
		c.SubscribeTimeout = 30 * time.Second
	}
	if c.HealthCheckInterval == 0 {
		c.HealthCheckInterval = 3 * time.Second
	}
	if c.ReconnectBackoffMin == 0 {
		c.ReconnectBackoffMin = 50 * time.Millisecond
	}
	if c.ReconnectBackoffMax == 0 {
		c.ReconnectBackoffMax = max(500*time.Millisecond, c.ReconnectBackoffMin)
	}
}

// Validate reports what is wrong with the config, wrapping ErrInvalidConfig.
func (c SubscriberConfig) Validate() error {
	switch {
	case c.Client == nil:
		return fmt.Errorf("%w: SubscriberConfig.Client is required", ErrInvalidConfig)
	case c.QueueSize < 0:
		return fmt.Errorf("%w: SubscriberConfig.QueueSize must be positive, got %d", ErrInvalidConfig, c.QueueSize)
	case c.Overflow != DropNewest && c.Overflow != DropOldest:
		return fmt.Errorf("%w: unknown SubscriberConfig.Overflow %v", ErrInvalidConfig, c.Overflow)
	case c.SubscribeTimeout < 0:
		return fmt.Errorf("%w: SubscriberConfig.SubscribeTimeout must not be negative", ErrInvalidConfig)
	case c.HealthCheckInterval < minHealthCheckInterval:
		return fmt.Errorf("%w: SubscriberConfig.HealthCheckInterval must be at least %v, got %v",
			ErrInvalidConfig, minHealthCheckInterval, c.HealthCheckInterval)
	case c.ReconnectBackoffMin < 0 || c.ReconnectBackoffMax < c.ReconnectBackoffMin:
		return fmt.Errorf("%w: SubscriberConfig.ReconnectBackoffMax (%v) must be at least ReconnectBackoffMin (%v)",
			ErrInvalidConfig, c.ReconnectBackoffMax, c.ReconnectBackoffMin)
	}
	return nil
}
