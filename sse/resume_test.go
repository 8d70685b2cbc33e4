package sse_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/sse"
)

// historySubscriber stands in for a Subscriber with recovery, for the
// handler's own tests of resuming: live messages come from a gochannel, and
// each topic has a history of epoch "e1" holding the offsets after trimmed.
type historySubscriber struct {
	*gochannel.GoChannel
	history map[string][]*message.Message // offsets 1..n
	trimmed uint64

	mu   sync.Mutex
	from []redispubsub.Position
}

var _ redispubsub.PositionSubscriber = (*historySubscriber)(nil)

func newHistorySubscriber(t *testing.T) *historySubscriber {
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	return &historySubscriber{GoChannel: gc, history: map[string][]*message.Message{}}
}

// positioned returns a message at offset of epoch "e1".
func positioned(offset uint64) *message.Message {
	msg := message.NewMessage(fmt.Sprint("u-", offset), []byte(strconv.FormatUint(offset, 10)))
	msg.Metadata.Set(redispubsub.MetadataOffset, strconv.FormatUint(offset, 10))
	msg.Metadata.Set(redispubsub.MetadataEpoch, "e1")
	return msg
}

// SubscribeFrom delivers the history after from, then live messages.
func (h *historySubscriber) SubscribeFrom(ctx context.Context, topic string, from redispubsub.Position) (<-chan *message.Message, error) {
	h.mu.Lock()
	h.from = append(h.from, from)
	h.mu.Unlock()
	history := h.history[topic]
	if from.Epoch != "e1" || from.Offset < h.trimmed || from.Offset > uint64(len(history)) {
		return nil, fmt.Errorf("topic %q after %v: %w", topic, from, redispubsub.ErrPositionLost)
	}
	live, err := h.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		send := func(msg *message.Message) bool {
			select {
			case out <- msg:
			case <-ctx.Done():
				return false
			}
			select {
			case <-msg.Acked():
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, msg := range history[from.Offset:] {
			if !send(msg.Copy()) {
				return
			}
		}
		for msg := range live {
			if !send(msg) {
				return
			}
		}
	}()
	return out, nil
}

func (h *historySubscriber) froms() []redispubsub.Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]redispubsub.Position(nil), h.from...)
}

func newResumeServer(t *testing.T) (*historySubscriber, *sse.Handler, *testServer) {
	sub := newHistorySubscriber(t)
	sub.history["a"] = []*message.Message{positioned(1), positioned(2), positioned(3), positioned(4)}
	sub.trimmed = 1 // offset 1 is gone: resuming after 0 is lost
	h, err := sse.NewHandler(sub, sse.Config{Authorize: allowAll})
	require.NoError(t, err)
	return sub, h, startServer(t, h)
}

func requireIDs(t *testing.T, c *client, ids ...string) {
	t.Helper()
	for _, id := range ids {
		ev := c.next()
		require.Equal(t, "a", ev.name)
		require.Equal(t, id, ev.id)
	}
}

// A reconnecting EventSource sends Last-Event-ID: the stream resumes after
// it, then goes on live. A client that cannot set headers passes the id as
// a query parameter; the header wins.
func TestHandler_ResumesAfterLastEventID(t *testing.T) {
	sub, h, ts := newResumeServer(t)

	c := ts.get(t, "/events?topic=a", http.Header{"Last-Event-ID": {"2-e1"}})
	requireIDs(t, c, "3-e1", "4-e1")
	require.NoError(t, sub.Publish("a", positioned(5)))
	requireIDs(t, c, "5-e1")

	c = ts.get(t, "/events?topic=a&lastEventId=3-e1", nil)
	requireIDs(t, c, "4-e1")
	c = ts.get(t, "/events?topic=a&lastEventId=1-e1", http.Header{"Last-Event-ID": {"3-e1"}})
	requireIDs(t, c, "4-e1")

	assert.Equal(t, []redispubsub.Position{{Offset: 2, Epoch: "e1"}, {Offset: 3, Epoch: "e1"}, {Offset: 3, Epoch: "e1"}}, sub.froms())
	assert.Equal(t, uint64(3), h.Stats().Resumed)
	assert.Zero(t, h.Stats().Lost)
}

// When the stream cannot resume after the Last-Event-ID, it starts with an
// EventLost saying why, then goes on live.
func TestHandler_LostPositionIsAnnounced(t *testing.T) {
	sub, h, ts := newResumeServer(t)
	for _, tc := range []struct {
		target, lastEventID, reason string
	}{
		{"/events?topic=a", "0-e1", "the history no longer holds the position"},
		{"/events?topic=a", "3-e0", "the history no longer holds the position"},
		{"/events?topic=a", "not-a-position", "the last event id is not a position"},
		{"/events?topic=a&topic=b", "3-e1", "resuming needs a single topic: each channel has positions of its own"},
	} {
		c := ts.get(t, tc.target, http.Header{"Last-Event-ID": {tc.lastEventID}})
		assert.Equal(t, event{name: sse.EventLost, data: `{"lastEventId":"` + tc.lastEventID + `","reason":"` + tc.reason + `"}`}, c.next(), tc.lastEventID)
		require.NoError(t, sub.Publish("a", positioned(9)))
		requireIDs(t, c, "9-e1")
	}
	// Neither asked for an id that is no position, nor for several topics.
	assert.Equal(t, []redispubsub.Position{{Offset: 0, Epoch: "e1"}, {Offset: 3, Epoch: "e0"}}, sub.froms())
	assert.Equal(t, uint64(4), h.Stats().Lost)
	assert.Zero(t, h.Stats().Resumed)
}

// Without a history there is nothing to resume from: said so, then live.
// On Redis, the channel has none (its Publisher keeps none), or the
// Subscriber's marshaler carries no positions (RawJSON); a Subscriber
// without SubscribeFrom (here gochannel) keeps none at all.
func TestHandler_LastEventIDWithoutHistory(t *testing.T) {
	pub, _, _, ts := serveRedis(t, sse.Config{Authorize: allowAll})
	c := ts.get(t, "/events?topic=a", http.Header{"Last-Event-ID": {"3-e1"}})
	assert.Equal(t, event{name: sse.EventLost, data: `{"lastEventId":"3-e1","reason":"the history no longer holds the position"}`}, c.next())
	publish(t, pub, "a", "u-1", "1")
	assert.Equal(t, event{name: "a", data: `{"type":"a","payload":1,"uuid":"u-1"}`}, c.next())

	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	h, err := sse.NewHandler(gc, sse.Config{Authorize: allowAll})
	require.NoError(t, err)
	c = startServer(t, h).get(t, "/events?topic=a", http.Header{"Last-Event-ID": {"3-e1"}})
	assert.Equal(t, event{name: sse.EventLost, data: `{"lastEventId":"3-e1","reason":"the subscriber keeps no history"}`}, c.next())
	publish(t, gc, "a", "u-2", "2")
	assert.Equal(t, event{name: "a", data: `{"type":"a","payload":2,"uuid":"u-2"}`}, c.next())

	srv := redistest.Start(t)
	raw, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: srv.NewClient(t), Marshaler: redispubsub.RawJSONMarshaler{}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = raw.Close() })
	h, err = sse.NewHandler(raw, sse.Config{Authorize: allowAll})
	require.NoError(t, err)
	c = startServer(t, h).get(t, "/events?topic=a", http.Header{"Last-Event-ID": {"3-e1"}})
	assert.Equal(t, event{name: sse.EventLost,
		data: `{"lastEventId":"3-e1","reason":"the subscriber cannot start from a position (its marshaler carries none)"}`}, c.next())
}

// On Redis, with a Publisher that keeps a history: ids are the messages'
// positions, and a stream that starts after one of them gets what followed
// it, then live events; a position of another epoch is lost.
func TestHandler_ResumesFromRedisHistory(t *testing.T) {
	srv := redistest.Start(t)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t), History: redispubsub.History{Size: 100}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	h, err := sse.NewHandler(sub, sse.Config{Authorize: allowAll})
	require.NoError(t, err)
	ts := startServer(t, h)

	first := ts.get(t, "/events?topic=a", nil)
	for i := 1; i <= 3; i++ {
		publish(t, pub, "a", fmt.Sprint("u-", i), strconv.Itoa(i))
	}
	var ids []string
	for i := 1; i <= 3; i++ {
		ev := first.next()
		pos, err := redispubsub.ParsePosition(ev.id)
		require.NoError(t, err, "id of event %d", i)
		require.Equal(t, uint64(i), pos.Offset)
		require.Contains(t, ev.data, fmt.Sprintf(`"payload":%d,"uuid":"u-%d"`, i, i))
		ids = append(ids, ev.id)
	}

	resumed := ts.get(t, "/events?topic=a", http.Header{"Last-Event-ID": {ids[0]}})
	assert.Equal(t, ids[1], resumed.next().id)
	assert.Equal(t, ids[2], resumed.next().id)
	publish(t, pub, "a", "u-4", "4")
	live := resumed.next()
	assert.Contains(t, live.data, `"uuid":"u-4"`)
	assert.Equal(t, live.id, first.next().id)
	assert.Equal(t, uint64(1), h.Stats().Resumed)

	other := "2-not-the-epoch"
	lost := ts.get(t, "/events?topic=a", http.Header{"Last-Event-ID": {other}})
	assert.Equal(t, event{name: sse.EventLost, data: `{"lastEventId":"` + other + `","reason":"the history no longer holds the position"}`}, lost.next())
	publish(t, pub, "a", "u-5", "5")
	assert.Contains(t, lost.next().data, `"uuid":"u-5"`)
}
