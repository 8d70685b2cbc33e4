package sse

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// endWriteTimeout bounds the write of a final EventEnd (and WriteTimeout,
// when shorter): a stream that ends waits no longer for its client.
const endWriteTimeout = time.Second

// stream is one response: the request's goroutine writes events and
// heartbeats; one forwarder goroutine per topic moves the topic's messages
// into events, never waiting for the client.
type stream struct {
	h      *Handler
	ctx    context.Context // ends when the client goes or the stream ends
	w      http.ResponseWriter
	rc     *http.ResponseController
	logger watermill.LoggerAdapter

	events chan []byte // encoded events, Config.Buffer of them at most

	// overflowed is set, and slow closed, by the first forwarder that finds
	// events full; the stream then ends and the forwarders drop the rest.
	overflowed atomic.Bool
	slowOnce   sync.Once
	slow       chan struct{}

	// dropped counts the messages of this stream Acked without their event
	// being written (see Stats.Dropped).
	dropped atomic.Uint64

	// forwarders counts the forwarders running; the first one to return
	// closes closed (a subscription ended), the last one ended.
	forwarders atomic.Int32
	closedOnce sync.Once
	closed     chan struct{}
	ended      chan struct{}

	// deadlines is cleared once the ResponseWriter said it does not support
	// write deadlines. Used by the request's goroutine only.
	deadlines bool
	// timedOut and shutdown say that a write timed out, or that the stream
	// ended on Close. Used by the request's goroutine only.
	timedOut, shutdown bool
}

// serve streams topics to w until the stream ends; see Handler.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, topics []string) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	s := &stream{
		h:         h,
		ctx:       ctx,
		w:         w,
		rc:        http.NewResponseController(w),
		logger:    h.logger.With(watermill.LogFields{"remote_addr": r.RemoteAddr, "topics": topics}),
		events:    make(chan []byte, h.config.Buffer),
		slow:      make(chan struct{}),
		closed:    make(chan struct{}),
		ended:     make(chan struct{}),
		deadlines: h.config.WriteTimeout > 0,
	}
	lastEventID := r.Header.Get("Last-Event-ID")
	if lastEventID == "" {
		lastEventID = r.URL.Query().Get(LastEventIDParam)
	}
	channels, lost, err := h.subscribe(ctx, topics, lastEventID)
	if err != nil {
		cancel()
		if r.Context().Err() != nil {
			return // the client went while it was subscribing
		}
		h.logger.Error("sse: cannot subscribe", err, watermill.LogFields{"topics": topics})
		h.refuse(w, r, http.StatusServiceUnavailable, "cannot subscribe", &h.stats.subscribeFailures, err)
		return
	}

	h.stats.served.Add(1)
	s.forwarders.Store(int32(len(channels)))
	for i, msgs := range channels {
		go s.forward(topics[i], msgs)
	}
	defer func() {
		cancel()
		<-s.ended // the Subscriber closes the channels once ctx ended
		s.finish()
	}()

	header := w.Header()
	header.Set("Content-Type", "text/event-stream")
	header.Set("Cache-Control", "no-cache")
	header.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	var start []byte
	if h.config.Retry > 0 {
		start = strconv.AppendInt(append(start, "retry: "...), h.config.Retry.Milliseconds(), 10)
		start = append(start, '\n', '\n')
	}
	if lost != nil {
		start = append(start, noticeEvent(EventLost, lost)...)
		h.stats.lost.Add(1)
	}
	if err := s.rc.Flush(); errors.Is(err, http.ErrNotSupported) {
		h.logger.Error("sse: the ResponseWriter cannot flush: no stream can be served", err, nil)
		return
	}
	if len(start) > 0 && !s.write(start) {
		return
	}
	s.run()
}

// subscribe subscribes to topics, or resumes the one topic after
// lastEventID (see Handler). lost, when not nil, is the data of the
// EventLost event the stream starts with. On an error, the subscriptions
// made end with ctx.
func (h *Handler) subscribe(ctx context.Context, topics []string, lastEventID string) (channels []<-chan *message.Message, lost map[string]string, err error) {
	if lastEventID != "" {
		var reason string
		switch {
		case len(topics) > 1:
			reason = "resuming needs a single topic: each channel has positions of its own"
		case h.resumer == nil:
			reason = "the subscriber keeps no history"
		default:
			pos, err := redispubsub.ParsePosition(lastEventID)
			if err != nil {
				reason = "the last event id is not a position"
				break
			}
			msgs, err := h.resumer.SubscribeFrom(ctx, topics[0], pos)
			if err == nil {
				h.stats.resumed.Add(1)
				return []<-chan *message.Message{msgs}, nil, nil
			}
			switch {
			case errors.Is(err, redispubsub.ErrPositionLost):
				reason = "the history no longer holds the position"
			case errors.Is(err, redispubsub.ErrPositionsUnsupported):
				reason = "the subscriber cannot start from a position (its marshaler carries none)"
			default:
				return nil, nil, err
			}
		}
		lost = map[string]string{"lastEventId": lastEventID, "reason": reason}
	}
	channels = make([]<-chan *message.Message, 0, len(topics))
	for _, topic := range topics {
		msgs, err := h.sub.Subscribe(ctx, topic)
		if err != nil {
			return nil, nil, err
		}
		channels = append(channels, msgs)
	}
	return channels, lost, nil
}

// forward moves the messages of topic into the stream's events, Acking each
// once its event is there; when events is full the stream is slow, and it
// drops (and Acks) the rest. It returns when the Subscriber closed msgs.
func (s *stream) forward(topic string, msgs <-chan *message.Message) {
	defer func() {
		s.closedOnce.Do(func() { close(s.closed) })
		if s.forwarders.Add(-1) == 0 {
			close(s.ended)
		}
	}()
	for msg := range msgs {
		if s.overflowed.Load() {
			s.drop(1)
			msg.Ack()
			continue
		}
		ev := messageEvent(topic, msg)
		select {
		case s.events <- ev:
		default:
			s.drop(1)
			s.slowOnce.Do(func() {
				s.overflowed.Store(true)
				s.h.stats.slow.Add(1)
				close(s.slow) // logged by finish, with what was dropped
			})
		}
		msg.Ack()
	}
}

// drop counts n messages Acked without their event being written.
func (s *stream) drop(n int) {
	if n > 0 {
		s.dropped.Add(uint64(n))
		s.h.stats.dropped.Add(uint64(n))
	}
}

// finish runs once every forwarder returned: when the stream ended as slow
// (a full buffer or a write timeout) or on Close, the events still queued
// are dropped, counted and logged with the end.
func (s *stream) finish() {
	slow := s.overflowed.Load() || s.timedOut
	if !slow && !s.shutdown {
		return
	}
	s.drop(len(s.events))
	dropped := s.dropped.Load()
	switch {
	case s.overflowed.Load():
		s.logger.Info("sse: client disconnected: it fell a whole buffer behind", watermill.LogFields{"buffer": s.h.config.Buffer, "dropped": dropped})
	case s.timedOut:
		s.logger.Info("sse: client disconnected: a write timed out", watermill.LogFields{"write_timeout": s.h.config.WriteTimeout, "dropped": dropped})
	case dropped > 0:
		s.logger.Info("sse: stream ended on Close: queued events dropped", watermill.LogFields{"dropped": dropped})
	}
}

// run writes events and heartbeats until the stream ends.
func (s *stream) run() {
	var tick <-chan time.Time
	if s.h.config.Heartbeat > 0 {
		ticker := time.NewTicker(s.h.config.Heartbeat)
		defer ticker.Stop()
		tick = ticker.C
	}
	var batch []byte
	for {
		if s.overflowed.Load() { // before the events that are still queued
			s.end(ReasonSlow)
			return
		}
		select {
		case ev := <-s.events:
			// Whatever else is queued goes in the same write and flush.
			batch = append(batch[:0], ev...)
			n := uint64(1)
		more:
			for {
				select {
				case ev := <-s.events:
					batch = append(batch, ev...)
					n++
				default:
					break more
				}
			}
			if !s.write(batch) {
				return
			}
			s.h.stats.events.Add(n)
			if cap(batch) > 64<<10 {
				batch = nil // do not keep the room of a burst
			}
		case <-tick:
			if !s.write(heartbeat) {
				return
			}
		case <-s.ctx.Done():
			return // the client went
		case <-s.slow:
			s.end(ReasonSlow)
			return
		case <-s.h.done:
			s.shutdown = true
			s.end(ReasonShutdown)
			return
		case <-s.closed:
			if s.ctx.Err() != nil {
				return
			}
			// The Subscriber closed a subscription of the stream (it was
			// closed, or Redis refused the channel since): the stream
			// ends rather than go on without the topic, and the client
			// reconnects. What was queued goes first.
			for len(s.events) > 0 {
				if !s.write(<-s.events) {
					return
				}
				s.h.stats.events.Add(1)
			}
			s.end(ReasonSubscriberClosed)
			return
		}
	}
}

// write writes b and flushes it within WriteTimeout. On failure it counts
// and logs why (unless the client went) and returns false.
func (s *stream) write(b []byte) bool {
	if s.deadlines {
		s.setDeadline(time.Now().Add(s.h.config.WriteTimeout))
	}
	_, err := s.w.Write(b)
	if err == nil {
		err = s.rc.Flush()
	}
	switch {
	case err == nil:
		return true
	case s.overflowed.Load():
		// Counted as slow already.
	case errors.Is(err, os.ErrDeadlineExceeded):
		// (net/http cancels the request's context on a failed write: the
		// timeout is told apart by its error.)
		s.h.stats.slow.Add(1)
		s.timedOut = true // logged by finish, with what was dropped
	case s.ctx.Err() != nil:
		// The client went.
	default:
		s.h.stats.writeFailures.Add(1)
		s.logger.Info("sse: stream ended: write failed", watermill.LogFields{"error": err.Error()})
	}
	s.closeConnection()
	return false
}

// end writes the final EventEnd saying why the server ends the stream, if it
// can within endWriteTimeout.
func (s *stream) end(reason string) {
	if s.deadlines {
		timeout := endWriteTimeout
		if s.h.config.WriteTimeout < timeout {
			timeout = s.h.config.WriteTimeout
		}
		s.setDeadline(time.Now().Add(timeout))
	}
	ev := noticeEvent(EventEnd, map[string]string{"reason": reason})
	if _, err := s.w.Write(ev); err == nil {
		_ = s.rc.Flush()
	}
	if reason == ReasonSlow {
		s.closeConnection()
	} else if s.deadlines {
		s.setDeadline(time.Time{}) // the connection may serve another request
	}
}

// closeConnection makes the server close the connection once the handler
// returned, instead of waiting for a client that does not read: every
// later write fails at once.
func (s *stream) closeConnection() {
	if s.deadlines {
		s.setDeadline(time.Now())
	}
}

func (s *stream) setDeadline(t time.Time) {
	if err := s.rc.SetWriteDeadline(t); errors.Is(err, http.ErrNotSupported) {
		s.deadlines = false
	}
}
