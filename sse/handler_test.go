package sse_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
	"github.com/alkdev/watermill-redispubsub/sse"
)

func publish(t testing.TB, pub message.Publisher, topic, uuid, payload string, metadata ...string) {
	t.Helper()
	msg := message.NewMessage(uuid, []byte(payload))
	for i := 0; i+1 < len(metadata); i += 2 {
		msg.Metadata.Set(metadata[i], metadata[i+1])
	}
	require.NoError(t, pub.Publish(topic, msg))
}

// The default handler streams each message as one event named by its type,
// the JSON envelope as data (the sequence stamp removed, as the Subscriber
// delivers it), no id without a recovery position.
func TestHandler_StreamsEnvelopeEvents(t *testing.T) {
	pub, _, h, ts := serveRedis(t, sse.Config{Authorize: allowAll})

	c := ts.get(t, "/events?topic=call.responded:42&topic=file.uploaded", nil)
	require.Equal(t, http.StatusOK, c.resp.StatusCode)
	assert.Equal(t, "text/event-stream", c.resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-cache", c.resp.Header.Get("Cache-Control"))

	publish(t, pub, "call.responded:42", "u-1", `{"ok": true}`, "k", "v")
	assert.Equal(t, event{name: "call.responded",
		data: `{"type":"call.responded","id":"42","payload":{"ok":true},"uuid":"u-1","metadata":{"k":"v"}}`}, c.next())
	publish(t, pub, "file.uploaded", "u-2", "not json")
	assert.Equal(t, event{name: "file.uploaded",
		data: `{"type":"file.uploaded","payload":"bm90IGpzb24=","payload_encoding":"base64","uuid":"u-2"}`}, c.next())

	testutil.Eventually(t, func() bool { return h.Stats().Events == 2 }, "two events counted")
	st := h.Stats()
	assert.Equal(t, sse.Stats{Open: 1, Served: 1, Events: 2}, st)
}

// NewTargetHandler streams the events of an EventTarget through its
// Subscriber: what DispatchEvent publishes reaches the stream as the
// envelope event.
func TestNewTargetHandler_StreamsTheTargetsEvents(t *testing.T) {
	pub, sub := redisPubSub(t)
	target, err := redispubsub.NewEventTarget[map[string]bool](pub, sub)
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Close() })
	require.Same(t, sub, target.Subscriber())
	_, err = sse.NewTargetHandler[int](nil, sse.Config{Authorize: allowAll})
	require.Error(t, err)
	h, err := sse.NewTargetHandler(target, sse.Config{Authorize: allowAll})
	require.NoError(t, err)
	ts := startServer(t, h)

	c := ts.get(t, "/events?topic=call.responded:42", nil)
	require.Equal(t, http.StatusOK, c.resp.StatusCode)
	require.NoError(t, target.DispatchEvent(context.Background(),
		redispubsub.Event[map[string]bool]{Type: "call.responded", ID: "42", Payload: map[string]bool{"ok": true}}))
	ev := c.next()
	assert.Equal(t, "call.responded", ev.name)
	var envelope struct {
		Type, ID, UUID string
		Payload        json.RawMessage
	}
	require.NoError(t, json.Unmarshal([]byte(ev.data), &envelope), ev.data)
	assert.Equal(t, "call.responded", envelope.Type)
	assert.Equal(t, "42", envelope.ID)
	assert.JSONEq(t, `{"ok":true}`, string(envelope.Payload))
	assert.NotEmpty(t, envelope.UUID)
	testutil.Eventually(t, func() bool { return h.Stats().Events == 1 }, "the event counted")
}

// Without Authorize every request is refused with 403, and the handler says
// why once, when it is made.
func TestHandler_WithoutAuthorizeRefusesEverything(t *testing.T) {
	_, sub := redisPubSub(t)
	logger := watermill.NewCaptureLogger()
	h, err := sse.NewHandler(sub, sse.Config{Logger: logger})
	require.NoError(t, err)
	ts := startServer(t, h)

	for range 2 {
		c := ts.get(t, "/events?topic=call.responded", nil)
		assert.Equal(t, http.StatusForbidden, c.resp.StatusCode)
	}
	assert.Equal(t, uint64(2), h.Stats().Unauthorized)
	assert.Zero(t, h.Stats().Served)
	errs := logger.Captured()[watermill.ErrorLogLevel]
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0].Msg, "Config.Authorize is not set")
}

// Authorize sees the request and its topics (deduplicated, in order); its
// error refuses the whole request.
func TestHandler_Authorize(t *testing.T) {
	_, sub := redisPubSub(t)
	var mu sync.Mutex
	var asked [][]string
	h, err := sse.NewHandler(sub, sse.Config{Authorize: func(r *http.Request, topics []string) error {
		mu.Lock()
		asked = append(asked, topics)
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer good" {
			return errors.New("no token")
		}
		for _, topic := range topics {
			if !strings.HasPrefix(topic, "public.") {
				return fmt.Errorf("topic %q is not public", topic)
			}
		}
		return nil
	}})
	require.NoError(t, err)
	ts := startServer(t, h)
	token := http.Header{"Authorization": {"Bearer good"}}

	c := ts.get(t, "/events?topic=public.a&topic=public.b:1&topic=public.a", token)
	assert.Equal(t, http.StatusOK, c.resp.StatusCode)
	c = ts.get(t, "/events?topic=public.a&topic=private.b", token)
	assert.Equal(t, http.StatusForbidden, c.resp.StatusCode)
	c = ts.get(t, "/events?topic=public.a", nil)
	assert.Equal(t, http.StatusForbidden, c.resp.StatusCode)

	mu.Lock()
	assert.Equal(t, [][]string{{"public.a", "public.b:1"}, {"public.a", "private.b"}, {"public.a"}}, asked)
	mu.Unlock()
	st := h.Stats()
	assert.Equal(t, uint64(1), st.Served)
	assert.Equal(t, uint64(2), st.Unauthorized)
}

func TestHandler_BadRequests(t *testing.T) {
	_, _, h, ts := serveRedis(t, sse.Config{Authorize: allowAll})

	many := make(url.Values)
	for i := range sse.DefaultMaxTopicsPerRequest + 1 {
		many.Add("topic", fmt.Sprintf("t%d", i))
	}
	for _, target := range []string{
		"/events",
		"/events?topic=",
		"/events?topic=:id-without-type",
		"/events?topic=a%0Ab",
		"/events?" + many.Encode(),
	} {
		c := ts.get(t, target, nil)
		assert.Equal(t, http.StatusBadRequest, c.resp.StatusCode, target)
	}
	conn, err := ts.l.Dial()
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /events?topic=a HTTP/1.1\r\nHost: sse.test\r\nContent-Length: 0\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	assert.Equal(t, uint64(6), h.Stats().BadRequests)
	assert.Zero(t, h.Stats().Served)
}

// Past MaxStreams a request gets 503; a slot is free again once a stream
// ended.
func TestHandler_MaxStreams(t *testing.T) {
	_, _, h, ts := serveRedis(t, sse.Config{Authorize: allowAll, MaxStreams: 2})

	first := ts.get(t, "/events?topic=a", nil)
	ts.get(t, "/events?topic=a", nil)
	assert.Equal(t, http.StatusServiceUnavailable, ts.get(t, "/events?topic=a", nil).resp.StatusCode)
	assert.Equal(t, uint64(1), h.Stats().OverLimit)
	_ = first.conn.Close()
	testutil.Eventually(t, func() bool { return h.Stats().Open == 1 }, "the closed stream ended")
	assert.Equal(t, http.StatusOK, ts.get(t, "/events?topic=a", nil).resp.StatusCode)
}

// A client that stops reading is disconnected once it is a whole buffer
// behind, with a final event when it reads again; the other client of the
// same topic receives everything meanwhile. Every message the slow stream
// did not write is counted as dropped, and logged with its end.
func TestHandler_SlowClientIsDisconnectedOthersGoOn(t *testing.T) {
	logs := &infoLog{}
	pub, sub, h, ts := serveRedis(t, sse.Config{Authorize: allowAll, Logger: logs})

	reader := ts.get(t, "/events?topic=tick", nil)
	stalled := ts.get(t, "/events?topic=tick", nil) // reads nothing until told
	n := sse.DefaultBuffer + 8
	received := make(chan event, n+1)
	go func() {
		for {
			ev, err := reader.read()
			if err != nil {
				close(received)
				return
			}
			received <- ev
		}
	}()
	for i := range n {
		publish(t, pub, "tick", fmt.Sprint("u-", i), fmt.Sprint(i))
	}
	for i := range n {
		ev := testutil.Wait(t, received, "an event of the reading client")
		require.Equal(t, "tick", ev.name)
		require.Contains(t, ev.data, fmt.Sprintf(`"payload":%d,`, i))
	}
	testutil.Eventually(t, func() bool { return h.Stats().SlowDisconnects == 1 }, "the stalled client counted as slow")
	// Both streams took (and Acked) every message before the stalled one
	// reads: a message its subscription still held when the stream ended
	// would be the Subscriber's Discarded, not the stream's Dropped.
	testutil.Eventually(t, func() bool { return sub.Stats().Acked == uint64(2*n) }, "both streams took every message")

	// What the writer had in hand when the client stalled, then the end.
	var got []event
	for {
		ev, err := stalled.read()
		if err != nil {
			t.Logf("stalled client: %d events, then %v", len(got), err)
			break
		}
		got = append(got, ev)
	}
	require.NotEmpty(t, got)
	assert.Equal(t, event{name: sse.EventEnd, data: `{"reason":"slow client"}`}, got[len(got)-1])
	assert.Less(t, len(got)-1, n)
	testutil.Eventually(t, func() bool { return h.Stats().Open == 1 }, "the slow stream ended")
	dropped := uint64(n - (len(got) - 1))
	assert.Equal(t, dropped, h.Stats().Dropped, "every message the stalled stream did not write")
	assert.Zero(t, sub.Stats().Discarded, "no message was left in a subscription")
	assert.Equal(t, []watermill.LogFields{{"buffer": sse.DefaultBuffer, "dropped": dropped}},
		logs.fields("sse: client disconnected: it fell a whole buffer behind"))

	publish(t, pub, "tick", "u-last", `"last"`)
	assert.Contains(t, testutil.Wait(t, received, "the last event").data, `"payload":"last"`)
	_ = reader.conn.Close()
	_, open := <-received
	assert.False(t, open)
}

// infoLog keeps what is logged at level Info.
type infoLog struct {
	watermill.NopLogger
	mu   sync.Mutex
	msgs []string
	flds []watermill.LogFields
}

func (l *infoLog) With(watermill.LogFields) watermill.LoggerAdapter { return l }

func (l *infoLog) Info(msg string, fields watermill.LogFields) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, msg)
	l.flds = append(l.flds, fields)
}

// fields returns the fields of every Info message msg, in order.
func (l *infoLog) fields(msg string) []watermill.LogFields {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []watermill.LogFields
	for i, m := range l.msgs {
		if m == msg {
			out = append(out, l.flds[i])
		}
	}
	return out
}

// A client whose connection accepts nothing is disconnected after
// WriteTimeout, even while its buffer has room.
func TestHandler_WriteTimeout(t *testing.T) {
	pub, _, h, ts := serveRedis(t, sse.Config{Authorize: allowAll, WriteTimeout: 50 * time.Millisecond})

	ts.get(t, "/events?topic=tick", nil) // never read
	publish(t, pub, "tick", "u-1", "1")
	testutil.Eventually(t, func() bool { return h.Stats().Open == 0 }, "the stream ended")
	assert.Equal(t, uint64(1), h.Stats().SlowDisconnects)
	assert.Zero(t, h.Stats().Events)
}

// Heartbeats keep an idle stream busy; Retry is sent first.
func TestHandler_HeartbeatAndRetry(t *testing.T) {
	_, _, _, ts := serveRedis(t, sse.Config{Authorize: allowAll, Heartbeat: 10 * time.Millisecond, Retry: 1500 * time.Millisecond})

	c := ts.get(t, "/events?topic=idle", nil)
	var lines []string
	for len(lines) < 6 {
		line, err := c.r.ReadString('\n')
		require.NoError(t, err)
		lines = append(lines, line)
	}
	assert.Equal(t, []string{"retry: 1500\n", "\n", ": ping\n", "\n", ": ping\n", "\n"}, lines)
}

// http.Server.Shutdown, with Close registered, ends every stream with a
// final event; the handler takes no new stream.
func TestHandler_ShutdownEndsOpenStreams(t *testing.T) {
	pub, _, h, ts := serveRedis(t, sse.Config{Authorize: allowAll})

	clients := []*client{
		ts.get(t, "/events?topic=a", nil),
		ts.get(t, "/events?topic=a&topic=b", nil),
		ts.get(t, "/events?topic=c", nil),
	}
	publish(t, pub, "a", "u-1", "1")
	clients[0].next()
	clients[1].next()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Timeout)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- ts.srv.Shutdown(ctx) }()
	for _, c := range clients {
		c.requireEnd(sse.ReasonShutdown)
	}
	require.NoError(t, testutil.Wait(t, shutdown, "Shutdown"))
	assert.Equal(t, int64(0), h.Stats().Open)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/events?topic=a", nil))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
}

// A Subscriber that closes ends the streams with a final event.
func TestHandler_SubscriberClosedEndsStreams(t *testing.T) {
	_, sub, h, ts := serveRedis(t, sse.Config{Authorize: allowAll})

	c := ts.get(t, "/events?topic=a&topic=b", nil)
	require.NoError(t, sub.Close())
	c.requireEnd(sse.ReasonSubscriberClosed)
	testutil.Eventually(t, func() bool { return h.Stats().Open == 0 }, "the stream ended")
}

// A client that goes ends its stream and its subscriptions.
func TestHandler_ClientGoneEndsStream(t *testing.T) {
	pub, _, h, ts := serveRedis(t, sse.Config{Authorize: allowAll})

	c := ts.get(t, "/events?topic=a", nil)
	publish(t, pub, "a", "u-1", "1")
	c.next()
	require.NoError(t, c.conn.Close())
	testutil.Eventually(t, func() bool { return h.Stats().Open == 0 }, "the stream ended")
	assert.Equal(t, sse.Stats{Served: 1, Events: 1}, h.Stats())
}

// oneTopicEnds is a gochannel whose topic "b" is a channel the test closes,
// as a Subscriber ends a subscription on its own.
type oneTopicEnds struct {
	*gochannel.GoChannel
	b chan *message.Message
}

func (s oneTopicEnds) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic == "b" {
		return s.b, nil
	}
	return s.GoChannel.Subscribe(ctx, topic)
}

// A stream whose Subscriber ends one of its subscriptions ends, rather than
// go on without that topic.
func TestHandler_OneSubscriptionEndedEndsTheStream(t *testing.T) {
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	sub := oneTopicEnds{GoChannel: gc, b: make(chan *message.Message)}
	h, err := sse.NewHandler(sub, sse.Config{Authorize: allowAll})
	require.NoError(t, err)
	ts := startServer(t, h)

	c := ts.get(t, "/events?topic=a&topic=b", nil)
	close(sub.b)
	c.requireEnd(sse.ReasonSubscriberClosed)
	testutil.Eventually(t, func() bool { return h.Stats().Open == 0 }, "the stream ended")
}

// A Subscribe that fails refuses the request with 503, counted and logged.
func TestHandler_SubscribeFailureIs503(t *testing.T) {
	_, sub, h, ts := serveRedis(t, sse.Config{Authorize: allowAll})
	require.NoError(t, sub.Close())
	c := ts.get(t, "/events?topic=a", nil)
	assert.Equal(t, http.StatusServiceUnavailable, c.resp.StatusCode)
	assert.Equal(t, uint64(1), h.Stats().SubscribeFailures)
	assert.Zero(t, h.Stats().Served)
	assert.Zero(t, h.Stats().Open, "the slot it took is free again")
}
