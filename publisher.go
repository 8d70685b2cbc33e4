package redispubsub

import (
	"context"
	"errors"
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
	// Client sends the PUBLISH commands. Required. Any redis.UniversalClient
	// works: *redis.Client, *redis.ClusterClient (PUBLISH reaches subscribers
	// on every node) or a failover client. The Publisher never closes it.
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
}

func (c *PublisherConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = JSONEnvelopeMarshaler{}
	}
}

// Validate reports what is wrong with the config, wrapping ErrInvalidConfig.
func (c PublisherConfig) Validate() error {
	if c.Client == nil {
		return fmt.Errorf("%w: PublisherConfig.Client is required", ErrInvalidConfig)
	}
	return nil
}

// Publisher publishes Watermill messages on Redis Pub/Sub channels. It is
// safe for concurrent use.
type Publisher struct {
	config PublisherConfig
	logger watermill.LoggerAdapter

	closeOnce sync.Once
	closed    atomic.Bool

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
	return &Publisher{
		config: config,
		logger: logger.With(watermill.LogFields{"component": "redispubsub.Publisher"}),
	}, nil
}

// Publish sends msgs to the channel ChannelPrefix+topic, in order, in one
// pipelined round trip, and returns after Redis answered for every one of
// them. All messages are encoded before anything is sent: an encoding error
// sends nothing. The round trip is cancelled when any message's context is
// done. A nil error means Redis accepted every message; it does not mean
// anyone was subscribed (Redis Pub/Sub keeps nothing): Stats counts the
// messages that reached no subscriber.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return ErrPublisherClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	channel := p.config.ChannelPrefix + topic
	bodies := make([][]byte, len(msgs))
	for i, msg := range msgs {
		body, err := p.config.Marshaler.Marshal(topic, msg)
		if err != nil {
			return fmt.Errorf("redispubsub: cannot marshal message %s for topic %q: %w", msg.UUID, topic, err)
		}
		bodies[i] = body
	}

	ctx, cancel := messagesContext(msgs)
	defer cancel()
	if ctx.Err() != nil {
		p.failed.Add(uint64(len(msgs)))
		return fmt.Errorf("redispubsub: publish to %q: nothing sent: %w", topic, context.Cause(ctx))
	}

	cmds := make([]*redis.IntCmd, len(msgs))
	_, err := p.config.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, body := range bodies {
			cmds[i] = pipe.Publish(ctx, channel, body)
		}
		return nil
	})
	return p.account(topic, msgs, cmds, err)
}

// account updates the counters from the replies of one pipeline and returns
// an error naming how many messages failed.
func (p *Publisher) account(topic string, msgs []*message.Message, cmds []*redis.IntCmd, pipeErr error) error {
	var failed int
	var firstErr error
	for i, cmd := range cmds {
		receivers, err := cmd.Result()
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			p.logger.Error("Publish failed", err, watermill.LogFields{"topic": topic, "message_uuid": msgs[i].UUID})
			continue
		}
		p.published.Add(1)
		if receivers == 0 {
			p.noSubscribers.Add(1)
		}
	}
	if failed == 0 {
		if pipeErr != nil && !errors.Is(pipeErr, redis.Nil) {
			// A pipeline error without a failed command should not happen;
			// never report success when go-redis says otherwise.
			p.failed.Add(uint64(len(msgs)))
			return fmt.Errorf("redispubsub: publish to %q: %w", topic, pipeErr)
		}
		return nil
	}
	p.failed.Add(uint64(failed))
	return fmt.Errorf("redispubsub: publish to %q: %d of %d messages not sent: %w", topic, failed, len(msgs), firstErr)
}

// messagesContext returns a context that is done as soon as the context of
// any of msgs is done.
func messagesContext(msgs []*message.Message) (context.Context, context.CancelFunc) {
	first := msgs[0].Context()
	ctx, cancel := context.WithCancelCause(first)
	stops := make([]func() bool, 0, len(msgs)-1)
	for _, msg := range msgs[1:] {
		mctx := msg.Context()
		if mctx == first || mctx.Done() == nil {
			continue
		}
		stops = append(stops, context.AfterFunc(mctx, func() { cancel(context.Cause(mctx)) }))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel(nil)
	}
}

// Close marks the Publisher closed: Publish then returns ErrPublisherClosed.
// Publish calls in flight complete. Close is idempotent and never closes
// PublisherConfig.Client.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.logger.Debug("Publisher closed", nil)
	})
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
