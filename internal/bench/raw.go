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
	// No channel yet: the PubSub connects on its first use.
	return &rawTopics{ps: r.sub.Subscribe(context.Background()), prefix: r.prefix, topics: topics}, nil
}

func (r *rawTransport) diagnose() string { return "" }

func (r *rawTransport) close() error {
	return errors.Join(r.pub.Close(), r.sub.Close())
}

// rawTopics subscribes its topics on one PubSub, rawChunk per SUBSCRIBE,
// while one goroutine counts the confirmations.
type rawTopics struct {
	ps     *redis.PubSub
	prefix string
	topics []string
	closed bool
}

func (t *rawTopics) subscribeAll(ctx context.Context) error {
	confirmed := make(chan error, 1)
	go func() {
		for n := 0; n < len(t.topics); {
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
	// The channel names are made here, as the adapter makes them: the
	// PubSub keeps them, and they count in its heap per topic.
	chunk := make([]string, 0, rawChunk)
	for i, topic := range t.topics {
		chunk = append(chunk, t.prefix+topic)
		if len(chunk) < rawChunk && i < len(t.topics)-1 {
			continue
		}
		if err := t.ps.Subscribe(ctx, chunk...); err != nil {
			_ = t.close() // ends the reader
			<-confirmed
			return fmt.Errorf("SUBSCRIBE: %w", err)
		}
		chunk = chunk[:0]
	}
	select {
	case err := <-confirmed:
		return err
	case <-ctx.Done():
		_ = t.close()
		<-confirmed
		return ctx.Err()
	}
}

func (t *rawTopics) close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	return t.ps.Close()
}
