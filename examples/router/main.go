// Command router is a small order service on Redis Pub/Sub: a Watermill
// router with three handlers and Watermill's middleware.
//
//	orders.placed ──validate──▶ orders.validated ──ship──▶ orders.shipped ──notify──▶ (printed)
//	                   │
//	                   └─ after the retries: ──▶ orders.poison (printed)
//
// Router middleware, outermost first: CorrelationID (the produced messages
// carry the correlation ID of the order), PoisonQueue (what still fails
// after the retries goes to orders.poison), Retry (2 retries), Timeout (1s
// per attempt, seen by the handlers in msg.Context()), Recoverer (a panic
// becomes an error, which Retry retries). The ship handler has its own
// Throttle (at most 20 shipments per second). The poison queue publishes
// through detached, see there why.
//
// Five orders are published: two go through, one fails once and is retried,
// one panics once and is retried, one is invalid and is poisoned. The
// program waits for the four shipments and the poisoned order, then shuts
// down, within 15 seconds.
//
//	go run ./examples/router                                    # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/router # your Redis
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
)

// Order is the payload of every topic of this service.
type Order struct {
	ID       string `json:"id"`
	Item     string `json:"item"`
	Quantity int    `json:"quantity"`
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second) // the whole run is bounded
	defer cancel()
	client, closeRedis, err := exampleredis.Client()
	if err != nil {
		return err
	}
	defer closeRedis()

	// The libraries only speak up about problems; the story is told by say.
	logger := exampleredis.Logger()
	say := exampleredis.Printer(out)

	const prefix = "example:router:" // every Redis channel is prefix + topic
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return err
	}
	defer pub.Close()
	// The router's Subscriber: the router closes it when it closes.
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return err
	}
	defer sub.Close()
	// A Subscriber of our own for the poison topic. Redis Pub/Sub keeps
	// nothing: it must be subscribed before anything is poisoned.
	observer, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return err
	}
	defer observer.Close()
	poisoned, err := observer.Subscribe(ctx, "orders.poison")
	if err != nil {
		return err
	}

	outcomes := make(chan string, 16) // "shipped <id>" or "poisoned <id>"
	var observers sync.WaitGroup
	defer observers.Wait()
	defer cancel() // runs before observers.Wait: ends the poison subscription
	observers.Add(1)
	go func() {
		defer observers.Done()
		for msg := range poisoned {
			var o Order
			_ = json.Unmarshal(msg.Payload, &o)
			say("POISONED %s: reason=%q topic=%s handler=%s", o.ID,
				msg.Metadata.Get(middleware.ReasonForPoisonedKey),
				msg.Metadata.Get(middleware.PoisonedTopicKey),
				msg.Metadata.Get(middleware.PoisonedHandlerKey))
			msg.Ack()
			outcomes <- "poisoned " + o.ID
		}
	}()

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, logger)
	if err != nil {
		return err
	}
	// PoisonQueue publishes the failed message itself, whose context the
	// Timeout middleware (inside it) has cancelled by then; Publish honours a
	// message's context and would refuse it, and the message would be
	// Nacked and redelivered for ever. detached publishes copies, which have
	// a context of their own.
	poisonQueue, err := middleware.PoisonQueue(detached{pub}, "orders.poison")
	if err != nil {
		return err
	}
	router.AddMiddleware(
		middleware.CorrelationID,
		poisonQueue,
		middleware.Retry{MaxRetries: 2, InitialInterval: 20 * time.Millisecond, Multiplier: 2}.Middleware,
		middleware.Timeout(time.Second),
		middleware.Recoverer,
	)

	// No lock needed: the Subscriber hands each handler one message at a time.
	attempts := map[string]int{}
	router.AddHandler("validate", "orders.placed", sub, "orders.validated", pub,
		func(msg *message.Message) ([]*message.Message, error) {
			var o Order
			if err := json.Unmarshal(msg.Payload, &o); err != nil {
				return nil, err
			}
			attempts[o.ID]++
			n := attempts[o.ID]
			switch {
			case o.Quantity <= 0:
				say("validate %s: attempt %d: invalid quantity %d", o.ID, n, o.Quantity)
				return nil, fmt.Errorf("invalid quantity %d", o.Quantity)
			case o.Item == "flaky widget" && n == 1:
				say("validate %s: attempt 1: inventory service timed out, will retry", o.ID)
				return nil, errors.New("inventory service timed out")
			case o.Item == "cursed lamp" && n == 1:
				say("validate %s: attempt 1: panics, will retry", o.ID)
				panic("the lamp is cursed")
			}
			say("validate %s: ok on attempt %d (correlation %s)", o.ID, n, middleware.MessageCorrelationID(msg))
			return []*message.Message{message.NewMessage(watermill.NewUUID(), msg.Payload)}, nil
		})

	ship := router.AddHandler("ship", "orders.validated", sub, "orders.shipped", pub,
		func(msg *message.Message) ([]*message.Message, error) {
			var o Order
			if err := json.Unmarshal(msg.Payload, &o); err != nil {
				return nil, err
			}
			select { // a call to a carrier, bounded by the Timeout middleware
			case <-time.After(5 * time.Millisecond):
			case <-msg.Context().Done():
				return nil, msg.Context().Err()
			}
			say("ship %s: %d x %s", o.ID, o.Quantity, o.Item)
			return []*message.Message{message.NewMessage(watermill.NewUUID(), msg.Payload)}, nil
		})
	ship.AddMiddleware(middleware.NewThrottle(20, time.Second).Middleware)

	router.AddConsumerHandler("notify", "orders.shipped", sub, func(msg *message.Message) error {
		var o Order
		if err := json.Unmarshal(msg.Payload, &o); err != nil {
			return err
		}
		say("notify %s: shipped (correlation %s)", o.ID, middleware.MessageCorrelationID(msg))
		outcomes <- "shipped " + o.ID
		return nil
	})

	var runErr error
	routerDone := make(chan struct{})
	go func() { defer close(routerDone); runErr = router.Run(ctx) }()
	defer func() { _ = router.Close(); <-routerDone }() // lets running handlers finish
	// Running is closed once every handler's Subscribe returned, i.e. Redis
	// confirmed the subscriptions: from now on nothing published is lost.
	select {
	case <-router.Running():
	case <-routerDone:
		return fmt.Errorf("router stopped before it was running: %w", runErr)
	}
	say("router running: validate, ship (throttled), notify")

	orders := []Order{
		{ID: "A-1", Item: "book", Quantity: 2},
		{ID: "A-2", Item: "flaky widget", Quantity: 1},
		{ID: "A-3", Item: "cursed lamp", Quantity: 1},
		{ID: "A-4", Item: "mug", Quantity: 0},
		{ID: "A-5", Item: "pen", Quantity: 4},
	}
	for _, o := range orders {
		payload, _ := json.Marshal(o)
		msg := message.NewMessage(watermill.NewUUID(), payload)
		middleware.SetCorrelationID("req-"+o.ID, msg)
		if err := pub.Publish("orders.placed", msg); err != nil {
			return err
		}
	}
	say("published %d orders", len(orders))

	for range orders { // every order ends shipped or poisoned
		select {
		case <-outcomes:
		case <-ctx.Done():
			return fmt.Errorf("not every order was shipped or poisoned in time: %w", ctx.Err())
		}
	}
	say("all %d orders shipped or poisoned; shutting down", len(orders))
	return nil
}

// detached is a Publisher that publishes copies of the messages it is given:
// same UUID, metadata and payload, but not their context, which may be done
// (message.Message.Copy does not keep it).
type detached struct{ message.Publisher }

func (d detached) Publish(topic string, msgs ...*message.Message) error {
	copies := make([]*message.Message, len(msgs))
	for i, msg := range msgs {
		copies[i] = msg.Copy()
	}
	return d.Publisher.Publish(topic, copies...)
}
