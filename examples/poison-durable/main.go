// Command poison-durable sends poison messages to a durable Redis Stream
// instead of a Pub/Sub topic.
//
// On Redis Pub/Sub a poison topic reaches only the subscribers that are
// connected at that moment: a message poisoned while nobody listens is gone.
// Here the router consumes payments from Redis Pub/Sub (this module), and
// its PoisonQueue middleware publishes what keeps failing through a
// watermill-redisstream Publisher, i.e. XADD to the stream
// "payments.poison", where it stays until someone reads and acknowledges it.
//
// The run: four payments are published, two are declined and poisoned while
// nothing reads the stream; the router is shut down; then an inspector
// starts, a redisstream Subscriber in the consumer group "inspectors", and
// still gets both poisoned payments with the reason, topic and handler in
// their metadata. It exits within 15 seconds.
//
//	go run ./examples/poison-durable                                    # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/poison-durable # your Redis
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
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
)

// Payment is the payload of the payments topic.
type Payment struct {
	ID     string `json:"id"`
	Card   string `json:"card"`
	Amount int    `json:"amount"`
}

const poisonStream = "example:poison-durable:payments.poison"

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "poison-durable:", err)
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

	// A fresh stream, in case REDIS_URL names a Redis used before.
	if err := client.Del(ctx, poisonStream).Err(); err != nil {
		return err
	}
	if err := processPayments(ctx, client, logger, say); err != nil {
		return err
	}
	n, err := client.XLen(ctx, poisonStream).Result()
	if err != nil {
		return err
	}
	say("router closed; nobody has read the poison stream yet; XLEN %s = %d", poisonStream, n)
	return inspectPoison(ctx, client, logger, say, int(n))
}

// processPayments runs the payment service until every payment is charged or
// poisoned, then closes it.
func processPayments(ctx context.Context, client redis.UniversalClient, logger watermill.LoggerAdapter, say func(string, ...any)) error {
	const prefix = "example:poison-durable:" // every Pub/Sub channel is prefix + topic
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return err
	}
	defer pub.Close()
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return err
	}
	defer sub.Close()

	// The redisstream Publisher closes the client it is given: give it one
	// of its own.
	streamClient, err := clientLike(client)
	if err != nil {
		return err
	}
	streamPub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: streamClient}, logger)
	if err != nil {
		return err
	}
	defer streamPub.Close()

	outcomes := make(chan string, 16)
	poisonQueue, err := middleware.PoisonQueue(notifying{streamPub, outcomes}, poisonStream)
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, logger)
	if err != nil {
		return err
	}
	router.AddMiddleware(
		poisonQueue, // outermost: once Retry gives up, the message goes to the stream and is acked
		middleware.Retry{MaxRetries: 1, InitialInterval: 20 * time.Millisecond}.Middleware,
	)
	attempts := map[string]int{} // no lock: the Subscriber hands over one message at a time
	router.AddConsumerHandler("charge", "payments", sub, func(msg *message.Message) error {
		var p Payment
		if err := json.Unmarshal(msg.Payload, &p); err != nil {
			return err
		}
		attempts[p.ID]++
		if p.Card == "4000-0000-0000-0002" {
			say("charge %s: attempt %d: card declined", p.ID, attempts[p.ID])
			return errors.New("card declined")
		}
		say("charge %s: %d EUR charged", p.ID, p.Amount)
		outcomes <- p.ID + " charged"
		return nil
	})

	var runErr error
	routerDone := make(chan struct{})
	go func() { defer close(routerDone); runErr = router.Run(ctx) }()
	defer func() { _ = router.Close(); <-routerDone }()
	select {
	case <-router.Running(): // subscribed, confirmed by Redis
	case <-routerDone:
		return fmt.Errorf("router stopped before it was running: %w", runErr)
	}
	say("payment service running (Redis Pub/Sub in, poison queue to the stream %s)", poisonStream)

	payments := []Payment{
		{ID: "p-1", Card: "4242-4242-4242-4242", Amount: 30},
		{ID: "p-2", Card: "4000-0000-0000-0002", Amount: 75},
		{ID: "p-3", Card: "4242-4242-4242-4242", Amount: 12},
		{ID: "p-4", Card: "4000-0000-0000-0002", Amount: 240},
	}
	for _, p := range payments {
		payload, _ := json.Marshal(p)
		if err := pub.Publish("payments", message.NewMessage(watermill.NewUUID(), payload)); err != nil {
			return err
		}
	}
	for range payments {
		select {
		case outcome := <-outcomes:
			say("%s", outcome)
		case <-ctx.Done():
			return fmt.Errorf("not every payment was charged or poisoned in time: %w", ctx.Err())
		}
	}
	return nil
}

// inspectPoison reads the poison stream as a consumer group member, long
// after the messages were poisoned, and acknowledges them.
func inspectPoison(ctx context.Context, client redis.UniversalClient, logger watermill.LoggerAdapter, say func(string, ...any), want int) error {
	streamClient, err := clientLike(client)
	if err != nil {
		return err
	}
	inspector, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        streamClient, // closed by the Subscriber
		ConsumerGroup: "inspectors",
		OldestId:      "0", // a new group starts at the beginning of the stream
		// Let Close end the blocking read promptly.
		DisableIndefiniteInitialBlock: true,
		BlockTime:                     100 * time.Millisecond,
	}, logger)
	if err != nil {
		return err
	}
	defer inspector.Close()
	subCtx, stop := context.WithCancel(ctx)
	defer stop()
	poisoned, err := inspector.Subscribe(subCtx, poisonStream)
	if err != nil {
		return err
	}
	say("inspector started (consumer group inspectors)")
	for range want {
		select {
		case msg := <-poisoned:
			var p Payment
			_ = json.Unmarshal(msg.Payload, &p)
			say("inspector: payment %s (%d EUR) poisoned: reason=%q topic=%s handler=%s",
				p.ID, p.Amount,
				msg.Metadata.Get(middleware.ReasonForPoisonedKey),
				msg.Metadata.Get(middleware.PoisonedTopicKey),
				msg.Metadata.Get(middleware.PoisonedHandlerKey))
			msg.Ack() // XACK: the group will not deliver it again
		case <-ctx.Done():
			return fmt.Errorf("the inspector did not get every poisoned payment in time: %w", ctx.Err())
		}
	}
	say("inspector got all %d poisoned payments; done", want)
	return nil
}

// notifying is a Publisher that reports every message it published.
type notifying struct {
	message.Publisher
	published chan<- string
}

func (n notifying) Publish(topic string, msgs ...*message.Message) error {
	if err := n.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	for _, msg := range msgs {
		var p Payment
		_ = json.Unmarshal(msg.Payload, &p)
		n.published <- fmt.Sprintf("%s written to the stream %s (XADD)", p.ID, topic)
	}
	return nil
}

// clientLike returns a new client to the same server as c.
func clientLike(c redis.UniversalClient) (*redis.Client, error) {
	rc, ok := c.(*redis.Client)
	if !ok {
		return nil, fmt.Errorf("cannot make a second client like a %T", c)
	}
	opts := *rc.Options()
	return redis.NewClient(&opts), nil
}
