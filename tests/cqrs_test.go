package tests

// Watermill's CQRS component (CommandBus + CommandProcessor, EventBus +
// EventProcessor) on the adapter.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

type wmPlaceOrder struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

type wmOrderPlaced struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

// Commands sent on the CommandBus are handled once by the CommandProcessor's
// handler (a failed attempt is Nacked and redelivered); the events it
// publishes on the EventBus reach both EventProcessor handlers, each on a
// Subscriber of its own (Redis Pub/Sub fans out), with the CQRS metadata.
func TestCQRS_CommandsAndEvents(t *testing.T) {
	const orders = 5
	srv := redistest.Start(t)
	newSubscriber := func() message.Subscriber {
		// Called from AddHandlers, on the test goroutine.
		return wmSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) {
			c.ChannelPrefix = "cqrs:"
			c.NackResendSleep = time.Millisecond
		})
	}
	// Shared by both buses; the router never closes it.
	prefixed, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t), ChannelPrefix: "cqrs:"}, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = prefixed.Close() })

	marshaler := cqrs.JSONMarshaler{}
	logger := testutil.Logger(t)

	commandBus, err := cqrs.NewCommandBusWithConfig(prefixed, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) {
			return "commands." + p.CommandName, nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	require.NoError(t, err)
	eventBus, err := cqrs.NewEventBusWithConfig(prefixed, cqrs.EventBusConfig{
		GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) {
			return "events." + p.EventName, nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	require.NoError(t, err)

	r := wmNewRouter(t)
	commandProcessor, err := cqrs.NewCommandProcessorWithConfig(r, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) {
			return "commands." + p.CommandName, nil
		},
		SubscriberConstructor: func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return newSubscriber(), nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	require.NoError(t, err)
	eventProcessor, err := cqrs.NewEventProcessorWithConfig(r, cqrs.EventProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
			return "events." + p.EventName, nil
		},
		SubscriberConstructor: func(cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return newSubscriber(), nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	require.NoError(t, err)

	var attempts, placed atomic.Int32
	require.NoError(t, commandProcessor.AddHandlers(cqrs.NewCommandHandler("place-order",
		func(ctx context.Context, cmd *wmPlaceOrder) error {
			if attempts.Add(1) == 1 {
				return errors.New("inventory service unavailable") // Nacked, redelivered
			}
			placed.Add(1)
			return eventBus.Publish(ctx, &wmOrderPlaced{OrderID: cmd.OrderID, Total: cmd.Total})
		})))

	type seen struct {
		handler string
		event   wmOrderPlaced
		name    string
	}
	events := make(chan seen, 2*orders)
	for _, name := range []string{"billing", "notifications"} {
		require.NoError(t, eventProcessor.AddHandlers(cqrs.NewEventHandler(name,
			func(ctx context.Context, ev *wmOrderPlaced) error {
				events <- seen{handler: name, event: *ev, name: cqrs.OriginalMessageFromCtx(ctx).Metadata.Get("name")}
				return nil
			})))
	}
	wmRunRouter(t, r)

	for i := range orders {
		require.NoError(t, commandBus.Send(context.Background(), &wmPlaceOrder{OrderID: fmt.Sprint("order-", i), Total: 10 * i}))
	}

	got := map[string][]wmOrderPlaced{}
	for range 2 * orders {
		s := testutil.Wait(t, events, "an event")
		assert.Equal(t, marshaler.Name(&wmOrderPlaced{}), s.name, "event name metadata")
		got[s.handler] = append(got[s.handler], s.event)
	}
	for _, handler := range []string{"billing", "notifications"} {
		var want []wmOrderPlaced
		for i := range orders {
			want = append(want, wmOrderPlaced{OrderID: fmt.Sprint("order-", i), Total: 10 * i})
		}
		assert.ElementsMatch(t, want, got[handler], handler)
	}
	assert.EqualValues(t, orders, placed.Load())
	assert.EqualValues(t, orders+1, attempts.Load())
}

// An EventProcessor handler started after an event was published never
// sees it: Redis Pub/Sub keeps nothing. Events published once the router
// runs (its handlers subscribed) all arrive.
func TestCQRS_EventsBeforeTheProcessorRunsAreLost(t *testing.T) {
	srv := redistest.Start(t)
	pub, _ := wmPubSub(t, srv, nil)
	marshaler := cqrs.JSONMarshaler{}
	topic := func(name string) string { return "events." + name }
	eventBus, err := cqrs.NewEventBusWithConfig(pub, cqrs.EventBusConfig{
		GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) { return topic(p.EventName), nil },
		Marshaler:            marshaler,
	})
	require.NoError(t, err)
	require.NoError(t, eventBus.Publish(context.Background(), &wmOrderPlaced{OrderID: "early"}))
	require.EqualValues(t, 1, pub.Stats().NoSubscribers)

	r := wmNewRouter(t)
	eventProcessor, err := cqrs.NewEventProcessorWithConfig(r, cqrs.EventProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
			return topic(p.EventName), nil
		},
		SubscriberConstructor: func(cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return wmSubscriber(t, srv, nil), nil
		},
		Marshaler: marshaler,
	})
	require.NoError(t, err)
	var mu sync.Mutex
	var ids []string
	done := make(chan struct{})
	require.NoError(t, eventProcessor.AddHandlers(cqrs.NewEventHandler("audit",
		func(_ context.Context, ev *wmOrderPlaced) error {
			mu.Lock()
			defer mu.Unlock()
			ids = append(ids, ev.OrderID)
			if ev.OrderID == "late-2" {
				close(done)
			}
			return nil
		})))
	wmRunRouter(t, r)

	for i := range 3 {
		require.NoError(t, eventBus.Publish(context.Background(), &wmOrderPlaced{OrderID: fmt.Sprint("late-", i)}))
	}
	testutil.Wait(t, done, "the last event")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"late-0", "late-1", "late-2"}, ids)
}
