package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// rawChunk is the number of channels per SUBSCRIBE of raw go-redis.
const rawChunk = 1000

// rawTransport is raw go-redis: the yardstick.
type rawTransport struct {
	prefix   string
	pub, sub redis.UniversalClient
}

func openRaw(cfg Config) (transport, error) {
	return &rawTransport{prefix: cfg.Prefix, pub: cfg.NewClient(), sub: cfg.NewClient()}, nil
}

func (r *rawTransport) publish(ctx context.Context, topic string, payload []byte, n int) error {
	channel := r.prefix + topic
	if n == 1 {
		return r.pub.Publish(ctx, channel, payload).Err()
	}
	_, err := r.pub.Pipelined(ctx, func(p redis.Pipeliner) error {
		for range n {
			p.Publish(ctx, channel, payload)
		}
		return nil
	})
	return err
}

func (r *rawTransport) consume(ctx context.Context, topic string, onMsg func()) (func(), error) {
	ps := r.sub.Subscribe(ctx, r.prefix+topic)
	if _, err := ps.Receive(ctx); err != nil { // the confirmation
		_ = ps.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			// Close ends the blocked read; a context would not (go-redis
			// does not interrupt a read in progress).
			if _, err := ps.ReceiveMessage(context.Background()); err != nil {
				return
			}
			onMsg()
		}
	}()
	return func() {
		_ = ps.Close()
		<-done
	}, nil
}

func (r *rawTransport) prepareTopics(topics []string, _ int, _ bool) (topicSet, error) {
	channels := make([]string, len(topics))
	for i, t := range topics {
		channels[i] = r.prefix + t
	}
	// No channel yet: the PubSub connects on its first use.
	return &rawTopics{ps: r.sub.Subscribe(context.Background()), channels: channels}, nil
}

func (r *rawTransport) diagnose() string { return "" }

func (r *rawTransport) close() error {
	return errors.Join(r.pub.Close(), r.sub.Close())
}

// rawTopics subscribes its channels on one PubSub, rawChunk per SUBSCRIBE,
// while one goroutine counts the confirmations.
type rawTopics struct {
	ps       *redis.PubSub
	channels []string
}

func (t *rawTopics) subscribeAll(ctx context.Context) error {
	confirmed := make(chan error, 1)
	go func() {
		for n := 0; n < len(t.channels); {
			msg, err := t.ps.Receive(ctx)
			if err != nil {
				confirmed <- err
				return
			}
			if s, ok := msg.(*redis.Subscription); ok && s.Kind == "subscribe" {
				n++
			}
		}
		confirmed <- nil
	}()
	for i := 0; i < len(t.channels); i += rawChunk {
		if err := t.ps.Subscribe(ctx, t.channels[i:min(i+rawChunk, len(t.channels))]...); err != nil {
			_ = t.ps.Close() // ends the reader
			<-confirmed
			return fmt.Errorf("SUBSCRIBE: %w", err)
		}
	}
	select {
	case err := <-confirmed:
		return err
	case <-ctx.Done():
		_ = t.ps.Close()
		<-confirmed
		return ctx.Err()
	}
}

func (t *rawTopics) close() error { return t.ps.Close() }
