// Command quickstart runs a Watermill router over Redis Pub/Sub: five orders
// are published, a handler processes them with retries, and the one order
// that keeps failing ends up on a poison topic.
//
//	go run ./examples/quickstart                                    # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/quickstart # your Redis
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
)

const maxRetries = 2 // at most 1+2 attempts per message

type Order struct {
	ID   int    `json:"id"`
	Item string `json:"item"`
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // the whole show is bounded
	defer cancel()
	client, closeRedis, err := exampleredis.Client()
	if err != nil {
		return err
	}
	defer closeRedis()

	// The libraries only speak up about problems; the story is told by say.
	logger := exampleredis.Logger()
	say := exampleredis.Printer(out)

	// Every Redis channel of this program is "quickstart:<topic>".
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: "quickstart:"}, logger)
	if err != nil {
		return err
	}
	defer pub.Close()
	// One Subscriber (one Redis connection) serves both the router and the poison topic.
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: "quickstart:"}, logger)
	if err != nil {
		return err
	}
	defer sub.Close()

	// Redis Pub/Sub keeps nothing: subscribe to the poison topic before anything can land there.
	poisoned, err := sub.Subscribe(ctx, "orders.poison")
	if err != nil {
		return err
	}
	outcomes := make(chan int, 10) // receives the ID of every order handled or poisoned
	poisonDone := make(chan struct{})
	defer func() { cancel(); <-poisonDone }() // ending ctx closes poisoned
	go func() {
		defer close(poisonDone)
		for msg := range poisoned {
			var o Order
			_ = json.Unmarshal(msg.Payload, &o)
			say("order %d poisoned: reason=%q", o.ID, msg.Metadata.Get(middleware.ReasonForPoisonedKey))
			msg.Ack()
			outcomes <- o.ID
		}
	}()

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, logger)
	if err != nil {
		return err
	}
	poison, err := middleware.PoisonQueue(pub, "orders.poison")
	if err != nil {
		return err
	}
	router.AddMiddleware(
		poison, // outermost: once Retry gives up, it publishes the message to the poison topic and acks it
		middleware.Retry{MaxRetries: maxRetries, InitialInterval: 50 * time.Millisecond, Multiplier: 2, MaxInterval: time.Second}.Middleware,
	)
	attempts := map[int]int{} // no lock: the Subscriber hands over one message at a time
	router.AddConsumerHandler("process-orders", "orders", sub, func(msg *message.Message) error {
		var o Order
		if err := json.Unmarshal(msg.Payload, &o); err != nil {
			return err
		}
		attempts[o.ID]++
		switch n := attempts[o.ID]; {
		case o.ID == 3 && n == 1: // a transient failure: the retry succeeds
			say("order 3: attempt 1 failed (payment service timed out), retrying")
			return errors.New("payment service timed out")
		case o.ID == 4 && n <= maxRetries: // a permanent failure: it ends on the poison topic
			say("order 4: attempt %d failed (out of stock), retrying", n)
			return errors.New("item out of stock")
		case o.ID == 4:
			say("order 4: attempt %d failed (out of stock), giving up", n)
			return errors.New("item out of stock")
		case n > 1:
			say("order %d handled on attempt %d", o.ID, n)
		default:
			say("handled order %d (%s)", o.ID, o.Item)
		}
		outcomes <- o.ID
		return nil
	})

	var runErr error
	routerDone := make(chan struct{})
	go func() { defer close(routerDone); runErr = router.Run(ctx) }()
	defer func() { _ = router.Close(); <-routerDone }() // runs first: lets the handler finish
	// Running is closed once the router's Subscribe returned, i.e. Redis confirmed the
	// subscription; a message published before that would be lost.
	select {
	case <-router.Running():
	case <-routerDone:
		return fmt.Errorf("router stopped before it was running: %w", runErr)
	}
	say("router running, subscribed to quickstart:orders and quickstart:orders.poison")

	var msgs []*message.Message
	for i, item := range []string{"2 books", "1 lamp", "3 mugs", "1 piano", "4 pens"} {
		payload, _ := json.Marshal(Order{ID: i + 1, Item: item})
		msgs = append(msgs, message.NewMessage(watermill.NewUUID(), payload))
	}
	say("publishing %d orders", len(msgs))
	if err := pub.Publish("orders", msgs...); err != nil { // one pipelined round trip
		return err
	}

	for range msgs { // every order ends handled or poisoned
		select {
		case <-outcomes:
		case <-ctx.Done():
			return fmt.Errorf("not every order was handled or poisoned in time: %w", ctx.Err())
		}
	}
	say("all %d orders handled or poisoned; shutting down", len(msgs))
	return nil
}
