package redispubsub

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// SubscribeFrom is Subscribe that starts after from, a position a message of
// topic carried (PositionOf; a browser's Last-Event-ID): it delivers what the
// channel's history holds after from, in offset order, then the live
// messages, with no gap and no duplicate between them (a live message whose
// offset was delivered from the history is acknowledged and skipped). It
// returns once Redis confirmed the subscription and the history was read.
//
// When the history no longer holds what follows from (trimmed past it,
// expired, or another epoch: the history was lost since), the error wraps
// ErrPositionLost and nothing stays subscribed: the caller starts again
// without a position (Subscribe), having missed what it cannot get back. A
// position ahead of the history is refused the same way.
//
// The history messages are delivered one at a time, the next after the
// Ack; a Nack redelivers after NackResendSleep. They count in Stats as
// Delivered, Acked, Nacked and Recovered; when ctx ends first, the one
// unanswered and those not handed out yet count as Discarded. Reading the
// history needs the
// permissions SubscriberConfig.Recover needs. It needs the
// JSONEnvelopeMarshaler (else the error wraps ErrPositionsUnsupported).
func (s *Subscriber) SubscribeFrom(ctx context.Context, topic string, from Position) (<-chan *message.Message, error) {
	if from.Epoch == "" {
		return nil, fmt.Errorf("redispubsub: subscribe to %q from %v: not a position (no epoch)", topic, from)
	}
	if _, ok := s.config.Marshaler.(JSONEnvelopeMarshaler); !ok {
		// The envelope carries the positions, and a history holds what
		// decoding the envelope gives.
		return nil, fmt.Errorf("%w: subscribe to %q from %v: SubscribeFrom needs the JSONEnvelopeMarshaler, got %T",
			ErrPositionsUnsupported, topic, from, s.config.Marshaler)
	}
	// The live subscription, and the hand-out, end with ctx or the
	// Subscriber.
	liveCtx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	live, err := s.Subscribe(liveCtx, topic)
	if err != nil {
		stop()
		cancel()
		return nil, err
	}
	history, err := s.historyAfter(ctx, topic, from)
	if err != nil {
		stop()
		cancel()
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		stop()
		cancel()
		return nil, ErrSubscriberClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	out := make(chan *message.Message)
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer stop()
		defer cancel()
		s.deliverFrom(liveCtx, out, s.config.ChannelPrefix+topic, history, live, from)
	}()
	return out, nil
}

// historyAfter reads the history of topic after from, or says
// why it cannot: an error wrapping ErrPositionLost when it no longer holds
// what follows from.
func (s *Subscriber) historyAfter(ctx context.Context, topic string, from Position) (historyRead, error) {
	channel := s.config.ChannelPrefix + topic
	h, err := readHistory(ctx, s.config.Client, channel, from.Offset, from.Epoch)
	if err != nil {
		return historyRead{}, err
	}
	lost := func(why string, args ...any) error {
		return fmt.Errorf("%w: topic %q, position %s: %s", ErrPositionLost, topic, from, fmt.Sprintf(why, args...))
	}
	switch {
	case h.epoch == "":
		return historyRead{}, lost("the channel has no history (expired, or never kept)")
	case h.epoch != from.Epoch:
		return historyRead{}, lost("the history is another one now (epoch %q): it was lost since", h.epoch)
	case from.Offset > h.top:
		return historyRead{}, lost("ahead of the history, whose last offset is %d", h.top)
	case len(h.entries) == 0 && h.top > from.Offset:
		return historyRead{}, lost("the history no longer holds offset %d", from.Offset+1)
	case len(h.entries) > 0 && h.entries[0].offset > from.Offset+1:
		return historyRead{}, lost("trimmed: the oldest offset held is %d", h.entries[0].offset)
	}
	return h, nil
}

// deliverFrom hands out the messages of history (decoding each as its turn
// comes, while the consumer handles the one before), then the live
// messages that follow it.
func (s *Subscriber) deliverFrom(ctx context.Context, out chan<- *message.Message, channel string, history historyRead,
	live <-chan *message.Message, from Position) {
	last := from.Offset
	for i, e := range history.entries {
		last = e.offset
		msg, err := e.incoming(channel, false, history.epoch).decode(s)
		if err != nil {
			continue // counted and logged
		}
		if !s.handOver(ctx, out, msg) {
			// This one and the rest of the history are not delivered.
			s.stats.discarded.Add(uint64(len(history.entries) - i))
			return
		}
		s.stats.recovered.Add(1)
	}
	for msg := range live {
		if pos, ok := PositionOf(msg); ok && pos.Epoch == from.Epoch && pos.Offset <= last {
			msg.Ack() // delivered from the history
			continue
		}
		select {
		case out <- msg:
		case <-ctx.Done():
			return // the live subscription ends with ctx
		}
	}
}

// handOver delivers msg on out until it is acknowledged, redelivering a
// copy after each Nack. It reports false when ctx ended first (ctx ends
// with the Subscriber, too); msg is then not delivered, and its caller
// counts it as discarded.
func (s *Subscriber) handOver(ctx context.Context, out chan<- *message.Message, msg *message.Message) bool {
	for attempt := msg; ; attempt = msg.Copy() {
		attempt.SetContext(ctx)
		select {
		case out <- attempt:
			s.stats.delivered.Add(1)
		case <-ctx.Done():
			return false
		}
		answer := ended
		select {
		case <-attempt.Acked():
			answer = acked
		case <-attempt.Nacked():
			answer = nacked
		case <-ctx.Done():
			answer = answerOf(attempt)
		}
		switch answer {
		case acked:
			s.stats.acked.Add(1)
			return true
		case nacked:
			s.stats.nacked.Add(1)
		default:
			return false
		}
		if d := s.config.NackResendSleep; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return false
			}
		}
	}
}
