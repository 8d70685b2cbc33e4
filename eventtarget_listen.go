package redispubsub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrEventDropped is wrapped by the error reported to the EventTarget's error
// hook (and logged) when Listen drops an event because its reader fell a
// whole buffer behind.
var ErrEventDropped = errors.New("redispubsub: event dropped: the listen buffer is full")

// DefaultListenBuffer is the number of events a Listen channel holds for its
// reader unless ListenBuffer says otherwise.
const DefaultListenBuffer = 64

// ListenOption configures Listen.
type ListenOption func(*listenConfig)

type listenConfig struct {
	buffer  int
	dropped *atomic.Uint64
}

// ListenBuffer sets how many events the channel of Listen holds while its
// reader is busy. Default DefaultListenBuffer (64); n below 1 means the
// default.
func ListenBuffer(n int) ListenOption {
	return func(c *listenConfig) { c.buffer = n }
}

// ListenDropCounter makes Listen add one to *counter for every event it drops;
// read it with counter.Load(), from any goroutine, at any time. Default: none
// (drops are still reported to the error hook and logged).
func ListenDropCounter(counter *atomic.Uint64) ListenOption {
	return func(c *listenConfig) { c.dropped = counter }
}

// Listen returns a channel that receives the events of topic ("type" or
// "type:id") until ctx ends, then is closed: the shape a GraphQL subscription
// resolver returns (gqlgen, graph-gophers/graphql-go).
//
// It is AddEventListener with a listener that puts each event into the
// channel without ever waiting: the channel holds up to ListenBuffer events
// (default 64); an event that arrives while it is full is dropped, so that a
// reader that fell behind never holds up the topic's other listeners. Each
// drop is counted (see ListenDropCounter), reported to the EventTarget's
// error hook with an error wrapping ErrEventDropped, and logged.
//
// Like AddEventListener, Listen returns once the subscription is live: an
// event dispatched after it returned is received. ctx bounds that wait and
// the listener's lifetime; its error is returned when it ends first. Once ctx
// ends the listener is removed and the channel is closed; events still in it
// can be read. The channel is closed only then, also when the listener was
// removed earlier (Close of the EventTarget, the Subscriber closing the
// topic): a reader must end ctx when it stops reading.
//
// The events' Payload values are shared with the topic's other listeners and
// must not be modified; their Message must not be Acked or Nacked (the
// EventTarget Acks it).
func Listen[T any](ctx context.Context, target *EventTarget[T], topic string, opts ...ListenOption) (<-chan Event[T], error) {
	config := listenConfig{buffer: DefaultListenBuffer}
	for _, opt := range opts {
		opt(&config)
	}
	if config.buffer < 1 {
		config.buffer = DefaultListenBuffer
	}
	events := make(chan Event[T], config.buffer)
	var mu sync.Mutex // closed, and the send that must not follow close(events)
	closed := false
	_, err := target.AddEventListener(ctx, topic, func(_ context.Context, ev Event[T]) {
		mu.Lock()
		dropped := false
		if !closed {
			select {
			case events <- ev:
			default:
				dropped = true
			}
		}
		mu.Unlock()
		if !dropped {
			return
		}
		if config.dropped != nil {
			config.dropped.Add(1)
		}
		target.report(topic, fmt.Errorf("%w (%d events, message %s)", ErrEventDropped, config.buffer, ev.Message.UUID), nil)
	}, WithContext(ctx))
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() {
		mu.Lock()
		closed = true
		close(events)
		mu.Unlock()
	})
	return events, nil
}
