package bench

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// handoff is the bare Ack hand-off, the ceiling of Watermill's contract on
// the machine it runs on, with no network and no codec: Publish gives each
// message a context of its own, sends it over an unbuffered channel to the
// one consumer of its topic, and waits for its Ack before the next. Every
// Watermill adapter does at least this per message (the message itself,
// made by NewMessage, is the publisher's: the transport's publish makes
// it). It is a message.Publisher and message.Subscriber of its own so that
// the consumer is the very loop that consumes every other Watermill system
// of the table.
//
// It is not a Pub/Sub to use: a topic has at most one subscription, what
// is published on a topic nobody subscribed is dropped, and Nack counts as
// Ack.
type handoff struct {
	// mu is held for reading by a Publish call for as long as it sends, and
	// for writing to add or end a subscription, so that a channel is closed
	// only when no Publish sends on it.
	mu     sync.RWMutex
	subs   map[string]*handoffSub
	closed bool
	wg     sync.WaitGroup // the goroutines that end the subscriptions

	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

// handoffSub is the one subscription of a topic.
type handoffSub struct {
	ctx context.Context // the Subscribe call's; the messages' contexts derive from it
	out chan *message.Message
}

var (
	errHandoffClosed     = errors.New("hand-off: closed")
	errHandoffSubscribed = errors.New("hand-off: the topic has a subscription already")
	errHandoffEnded      = errors.New("hand-off: the subscription ended before its Ack")
)

func newHandoff() *handoff {
	return &handoff{subs: make(map[string]*handoffSub), done: make(chan struct{})}
}

// Publish hands the messages to the topic's consumer one after the other,
// each once the one before was acknowledged, and returns once the last one
// was. Without a subscription it drops them.
func (h *handoff) Publish(topic string, msgs ...*message.Message) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return errHandoffClosed
	}
	s := h.subs[topic]
	if s == nil {
		return nil
	}
	for _, msg := range msgs {
		ctx, cancel := context.WithCancel(s.ctx)
		msg.SetContext(ctx)
		select {
		case s.out <- msg:
		case <-ctx.Done():
			cancel()
			return errHandoffEnded
		}
		select {
		case <-msg.Acked():
		case <-msg.Nacked():
		case <-ctx.Done():
			cancel()
			return errHandoffEnded
		}
		cancel()
	}
	return nil
}

// Subscribe returns the topic's channel. It is closed once ctx ends or
// Close is called.
func (h *handoff) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, errHandoffClosed
	case h.subs[topic] != nil:
		return nil, errHandoffSubscribed
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &handoffSub{ctx: ctx, out: make(chan *message.Message)}
	h.subs[topic] = s
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		select {
		case <-ctx.Done():
		case <-h.done:
			cancel() // ends a Publish that waits on this subscription
		}
		h.mu.Lock() // once no Publish sends on s.out
		delete(h.subs, topic)
		close(s.out)
		h.mu.Unlock()
		cancel()
	}()
	return s.out, nil
}

// Close ends every subscription and waits until their channels are closed.
func (h *handoff) Close() error {
	// done first: the write lock waits for every Publish, which may wait
	// for an Ack until its subscription ends.
	h.closeOnce.Do(func() { close(h.done) })
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.wg.Wait()
	return nil
}

// openHandoff opens the bare Ack hand-off; the target plays no part.
func openHandoff(Config, target) (transport, error) {
	h := newHandoff()
	return &wmTransport{
		pub:     h,
		sub:     h,
		name:    func(t string) string { return t },
		closeFn: h.Close,
	}, nil
}
