// Package sse serves the events of a Watermill Subscriber to browsers as
// Server-Sent Events, so that a browser's EventSource is one more
// EventTarget of the same events: one SSE event per message, named by its
// event type, its data the JSON envelope a TypeScript listener receives,
// its id the message's recovery position.
//
// A browser subscribes with
//
//	const events = new EventSource("/events?topic=call.responded:uuid-123");
//	events.addEventListener("call.responded", (e) => {
//	  const { type, id, payload, uuid, metadata } = JSON.parse(e.data);
//	});
//
// and nothing is served unless Config.Authorize allows it.
package sse

import (
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// The request parameters the Handler reads.
const (
	// TopicParam is the query parameter naming a topic to stream ("type" or
	// "type:id"); repeat it for several: ?topic=a&topic=b:1.
	TopicParam = "topic"
	// LastEventIDParam is the query parameter that stands in for the
	// Last-Event-ID header, for clients that cannot set headers (a page that
	// opens a new EventSource with the last id it saw). The header wins
	// when both are present.
	LastEventIDParam = "lastEventId"
)

var errLineBreak = errors.New("contains a line break or NUL")

// Handler is an http.Handler that streams topics of a Subscriber as
// Server-Sent Events (text/event-stream).
//
// A request names its topics with the query parameter TopicParam ("topic",
// repeatable, at most Config.MaxTopicsPerRequest, duplicates ignored). It is
// refused with 405 for a method other than GET, 400 without a topic, with
// too many or with an invalid one (empty event type, line breaks), 403 when
// Config.Authorize is missing or refuses it, 503 past Config.MaxStreams,
// after Close or when subscribing fails. Otherwise the response is 200 and
// each topic is subscribed (Subscribe) before the headers are sent: what is
// published after the response started is streamed.
//
// Each message received becomes one event:
//
//	event: <event type: the topic up to its first ':'>
//	id: <redispubsub.PositionOf(msg).String(), only when the message has one>
//	data: <JSONEnvelopeMarshaler's body: {"type":..,"id":..,"payload":..,"uuid":..,"metadata":..}>
//
// The data is the body a TypeScript listener of the Redis event target
// receives, less the sequence stamp that redispubsub's Subscriber removes
// from the messages it delivers. A message is Acked once its event is in the
// stream's buffer: from then on the stream answers for it, and a write that
// fails ends the stream and loses, for that connection only, what its
// buffer held (the browser reconnects and, with recovery, resumes from the
// last id it received). Messages are never Nacked.
//
// Resuming: when the request carries a Last-Event-ID (the header
// EventSource sends when it reconnects, or LastEventIDParam), names one
// topic, and the Subscriber is a redispubsub.PositionSubscriber (as
// redispubsub's Subscriber is), the topic is subscribed with SubscribeFrom
// after that position; the stream is then as gapless as SubscribeFrom, which
// is to deliver what followed the position, then live messages, without gap
// or duplicate, or to return an error wrapping redispubsub.ErrPositionLost
// (or redispubsub.ErrPositionsUnsupported). When that is not possible (the
// position is lost, the id is not a position, the Subscriber cannot resume,
// or the request names several topics, each of whose channels has positions
// of its own) the topics are subscribed live and the stream starts with an
// EventLost event saying why.
//
// A stream ends when the client goes (the request's context ends), when the
// client falls behind (a full buffer or a write timeout; see Config.Buffer),
// on Close, or when the Subscriber closes one of the stream's subscriptions
// (rather than go on without that topic); in the last three cases a final
// EventEnd event says why, when it can be written. A stream that ends as
// slow or on Close drops the messages it received but did not write (from
// a slow one, every message after its buffer was full): they are counted
// in Stats.Dropped and logged with the stream's end.
// Idle streams get a heartbeat comment every Config.Heartbeat. Every event is
// flushed as soon as it is written.
//
// Shutdown: http.Server.Shutdown does not end open streams by itself, it
// waits for them. Register Close with it:
//
//	srv.RegisterOnShutdown(func() { handler.Close() })
//
// The methods of a Handler are safe for concurrent use.
type Handler struct {
	sub     message.Subscriber
	resumer redispubsub.PositionSubscriber // sub, when it is one
	config  Config
	logger  watermill.LoggerAdapter

	mu      sync.Mutex
	closed  bool
	done    chan struct{} // closed by Close
	streams sync.WaitGroup

	stats stats
}

// NewHandler returns a Handler that streams the topics of sub. It does not
// own sub: Close does not close it. It fails, wrapping ErrInvalidConfig, for
// an invalid config, and for a nil sub.
func NewHandler(sub message.Subscriber, config Config) (*Handler, error) {
	if sub == nil {
		return nil, errors.New("sse: NewHandler: nil subscriber")
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	config.setDefaults()
	h := &Handler{
		sub:    sub,
		config: config,
		logger: config.Logger.With(watermill.LogFields{"sse_handler_uuid": watermill.NewShortUUID()}),
		done:   make(chan struct{}),
	}
	h.resumer, _ = sub.(redispubsub.PositionSubscriber)
	if config.Authorize == nil {
		h.logger.Error("sse: Config.Authorize is not set: every request is refused with 403 Forbidden", nil, nil)
	}
	return h, nil
}

// NewTargetHandler returns a Handler that streams the events of target: the
// topics of the Subscriber target receives with (see NewHandler). Each
// stream subscribes on its own; the target's listeners are not involved.
func NewTargetHandler[T any](target *redispubsub.EventTarget[T], config Config) (*Handler, error) {
	if target == nil {
		return nil, errors.New("sse: NewTargetHandler: nil event target")
	}
	return NewHandler(target.Subscriber(), config)
}

// ServeHTTP serves one stream; see Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		h.refuse(w, r, http.StatusMethodNotAllowed, "method not allowed", &h.stats.badRequests, nil)
		return
	}
	topics, err := h.topics(r)
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, err.Error(), &h.stats.badRequests, nil)
		return
	}
	if h.config.Authorize == nil {
		h.refuse(w, r, http.StatusForbidden, "forbidden", &h.stats.unauthorized, errors.New("no Config.Authorize"))
		return
	}
	if err := h.config.Authorize(r, topics); err != nil {
		h.refuse(w, r, http.StatusForbidden, "forbidden", &h.stats.unauthorized, err)
		return
	}
	if !h.join() {
		h.refuse(w, r, http.StatusServiceUnavailable, "too many streams", &h.stats.overLimit, nil)
		return
	}
	defer h.leave()
	h.serve(w, r, topics)
}

// topics returns the topics r names, deduplicated, or why they cannot be
// served.
func (h *Handler) topics(r *http.Request) ([]string, error) {
	var topics []string
	for _, topic := range r.URL.Query()[TopicParam] {
		if err := validTopic(topic); err != nil {
			return nil, errors.New("invalid topic: " + err.Error())
		}
		if !slices.Contains(topics, topic) {
			topics = append(topics, topic)
		}
	}
	switch {
	case len(topics) == 0:
		return nil, errors.New("no topic: name one with ?" + TopicParam + "=")
	case len(topics) > h.config.MaxTopicsPerRequest:
		return nil, errors.New("too many topics")
	}
	return topics, nil
}

// refuse answers r with status and text, counts it in counter and logs it
// (with cause, when not nil) at debug level.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, text string, counter *atomic.Uint64, cause error) {
	counter.Add(1)
	// Not the query: EventSource cannot set headers, so a page may pass its
	// credentials there.
	h.logger.Debug("Stream refused", watermill.LogFields{
		"status": status, "reason": text, "cause": errText(cause), "remote_addr": r.RemoteAddr, "path": r.URL.Path,
	})
	http.Error(w, text, status)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// join takes a stream slot: false after Close or past MaxStreams.
func (h *Handler) join() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.stats.open.Load() >= int64(h.config.MaxStreams) {
		return false
	}
	h.stats.open.Add(1)
	h.streams.Add(1)
	return true
}

func (h *Handler) leave() {
	h.stats.open.Add(-1)
	h.streams.Done()
}

// Close ends every open stream, each with a final EventEnd event
// (ReasonShutdown), and waits until their ServeHTTP calls returned; requests
// after it are refused with 503. It does not close the Subscriber. Close is
// idempotent and returns nil; every call waits as the first does.
func (h *Handler) Close() error {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
	h.mu.Unlock()
	h.streams.Wait()
	return nil
}

// Stats are counters of a Handler since it was made.
type Stats struct {
	// Open is the number of streams open now (counted from the moment a
	// request took a slot, before it subscribed).
	Open int64
	// Served is the number of streams started (200 sent).
	Served uint64
	// Events is the number of message events written to clients.
	Events uint64
	// Dropped is the number of messages Acked whose event was never written
	// because the stream ended as slow (SlowDisconnects) or on Close: those
	// a stream received once its buffer was full, and those still in its
	// buffer when it ended so. What a stream held when its client went or a
	// write failed other than by timeout is not counted.
	Dropped uint64
	// SlowDisconnects is the number of streams ended because their client
	// fell Config.Buffer events behind or a write timed out.
	SlowDisconnects uint64
	// WriteFailures is the number of streams ended by a failed write other
	// than a timeout (the client went away mid-write).
	WriteFailures uint64
	// Unauthorized is the number of requests refused with 403.
	Unauthorized uint64
	// OverLimit is the number of requests refused with 503 past MaxStreams
	// or after Close.
	OverLimit uint64
	// BadRequests is the number of requests refused with 400 or 405.
	BadRequests uint64
	// SubscribeFailures is the number of requests refused with 503 because
	// a Subscribe failed.
	SubscribeFailures uint64
	// Resumed is the number of streams started after their Last-Event-ID
	// with SubscribeFrom.
	Resumed uint64
	// Lost is the number of EventLost events sent.
	Lost uint64
}

type stats struct {
	open                                 atomic.Int64
	served, events, dropped              atomic.Uint64
	slow, writeFailures                  atomic.Uint64
	unauthorized, overLimit, badRequests atomic.Uint64
	subscribeFailures, resumed, lost     atomic.Uint64
}

// Stats returns the Handler's counters. Each is read atomically; together
// they are not one snapshot.
func (h *Handler) Stats() Stats {
	s := &h.stats
	return Stats{
		Open:              s.open.Load(),
		Served:            s.served.Load(),
		Events:            s.events.Load(),
		Dropped:           s.dropped.Load(),
		SlowDisconnects:   s.slow.Load(),
		WriteFailures:     s.writeFailures.Load(),
		Unauthorized:      s.unauthorized.Load(),
		OverLimit:         s.overLimit.Load(),
		BadRequests:       s.badRequests.Load(),
		SubscribeFailures: s.subscribeFailures.Load(),
		Resumed:           s.resumed.Load(),
		Lost:              s.lost.Load(),
	}
}
