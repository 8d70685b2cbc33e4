package redispubsub_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// wrapped is one call of a DeliveryWrapper as the tests record it.
type wrapped struct {
	topic string
	uuid  string
	err   error // what deliver returned
}

// wrapperKey is the context key through which the tests' wrapper hands
// the listeners a value.
type wrapperKey struct{}

// recordingWrapper returns a wrapper that calls deliver with a context
// holding wrapperKey = "wrapped" (unless skip says not to call it) and
// sends what it saw to calls.
func recordingWrapper(calls chan<- wrapped, skip func(*message.Message) bool) redispubsub.DeliveryWrapper {
	return func(topic string, msg *message.Message, deliver func(context.Context) error) {
		w := wrapped{topic: topic, uuid: msg.UUID}
		if skip == nil || !skip(msg) {
			w.err = deliver(context.WithValue(msg.Context(), wrapperKey{}, "wrapped"))
		}
		calls <- w
	}
}

// TestEventTarget_DeliveryWrapper checks WithDeliveryWrapper on both paths
// of delivery: this package's Subscriber (its delivery goroutine) and
// gochannel (the EventTarget's goroutine). The listeners get the wrapper's
// context; deliver reports a payload that does not decode and the
// listeners' panics; a wrapper that does not call deliver calls no
// listener; every message is Acked either way.
func TestEventTarget_DeliveryWrapper(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pubSub func(t *testing.T) (message.Publisher, message.Subscriber)
	}{
		{"redis", func(t *testing.T) (message.Publisher, message.Subscriber) {
			srv := redistest.Start(t)
			pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, nil)
			require.NoError(t, err)
			sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: srv.NewClient(t)}, nil)
			require.NoError(t, err)
			t.Cleanup(func() {
				assert.NoError(t, sub.Close())
				assert.NoError(t, pub.Close())
			})
			return pub, sub
		}},
		{"gochannel", func(t *testing.T) (message.Publisher, message.Subscriber) {
			gc := newGoChannel(t, false)
			return gc, gc
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verifyNoLeakAtCleanup(t)
			pub, sub := tc.pubSub(t)
			calls := make(chan wrapped, 8)
			reported := make(chan error, 8)
			const skipped = "not delivered"
			target, err := redispubsub.NewEventTarget[testPayload](pub, sub,
				redispubsub.WithErrorHandler(func(_ string, err error) { reported <- err }),
				redispubsub.WithDeliveryWrapper(recordingWrapper(calls, func(msg *message.Message) bool {
					return msg.Metadata.Get("case") == skipped
				})))
			require.NoError(t, err)
			defer target.Close()

			got := make(chan any, 8)
			ctx := context.Background()
			_, err = target.AddEventListener(ctx, "job:1", func(ctx context.Context, ev redispubsub.Event[testPayload]) {
				got <- ctx.Value(wrapperKey{})
				if ev.Payload.Seq < 0 {
					panic(errors.New("first listener fails"))
				}
			})
			require.NoError(t, err)
			_, err = target.AddEventListener(ctx, "job:1", func(_ context.Context, ev redispubsub.Event[testPayload]) {
				if ev.Payload.Seq < 0 {
					panic("second listener fails")
				}
			})
			require.NoError(t, err)

			publish := func(payload, metaCase string) *message.Message {
				msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
				msg.Metadata.Set("case", metaCase)
				require.NoError(t, pub.Publish("job:1", msg))
				return msg
			}

			// A good event: the listener has the wrapper's context, deliver
			// returns nil.
			msg := publish(`{"seq":1}`, "good")
			assert.Equal(t, wrapped{topic: "job:1", uuid: msg.UUID}, testutil.Wait(t, calls, "the wrapper"))
			assert.Equal(t, "wrapped", testutil.Wait(t, got, "the listener"))

			// Both listeners panic: deliver returns both panics, joined, as
			// reported to the error hook.
			msg = publish(`{"seq":-1}`, "panics")
			w := testutil.Wait(t, calls, "the wrapper")
			assert.Equal(t, msg.UUID, w.uuid)
			require.ErrorIs(t, w.err, redispubsub.ErrListenerPanic)
			assert.ErrorContains(t, w.err, "first listener fails")
			assert.ErrorContains(t, w.err, "second listener fails")
			assert.Equal(t, "wrapped", testutil.Wait(t, got, "the listener"))
			for range 2 {
				assert.ErrorIs(t, testutil.Wait(t, reported, "the error hook"), redispubsub.ErrListenerPanic)
			}

			// A payload that does not decode: no listener, deliver says so.
			msg = publish(`{"seq":"x"}`, "undecodable")
			w = testutil.Wait(t, calls, "the wrapper")
			assert.Equal(t, msg.UUID, w.uuid)
			assert.ErrorIs(t, w.err, redispubsub.ErrPayloadDecode)
			assert.ErrorIs(t, testutil.Wait(t, reported, "the error hook"), redispubsub.ErrPayloadDecode)

			// The wrapper does not call deliver: no listener runs, and the
			// next message is delivered (the skipped one was Acked).
			msg = publish(`{"seq":2}`, skipped)
			assert.Equal(t, wrapped{topic: "job:1", uuid: msg.UUID}, testutil.Wait(t, calls, "the wrapper"))
			msg = publish(`{"seq":3}`, "good")
			assert.Equal(t, wrapped{topic: "job:1", uuid: msg.UUID}, testutil.Wait(t, calls, "the wrapper"))
			assert.Equal(t, "wrapped", testutil.Wait(t, got, "the listener"))
			assert.Empty(t, got, "no listener ran for the skipped message")
			assert.Empty(t, reported)
		})
	}
}
