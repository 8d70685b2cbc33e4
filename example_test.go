package redispubsub_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
)

// Several messages of one subscription in flight at once, and all the events
// of one entity (the envelope's id) in order: a pattern over
// "order.updated:*" with the id as the ordering key. Each id's next message
// comes after the previous one's Ack; different ids run concurrently.
func ExampleSubscriberConfig_orderingKey() {
	client, closeRedis, err := exampleredis.Client() // REDIS_URL, or an embedded Redis
	if err != nil {
		panic(err)
	}
	defer closeRedis()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{
		Client:        client,
		ChannelPrefix: "example:",
		MaxInFlight:   8,
		OrderingKey: func(msg *message.Message) string {
			_, id := redispubsub.SplitTopic(msg.Metadata.Get(redispubsub.MetadataTopic))
			return id
		},
	}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: "example:"}, nil)
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	messages, err := sub.SubscribePattern(ctx, "order.updated:*")
	if err != nil {
		panic(err)
	}
	for step := 1; step <= 3; step++ {
		for _, id := range []string{"a", "b"} {
			payload := fmt.Sprintf(`{"step":%d}`, step)
			if err := pub.Publish("order.updated:"+id, message.NewMessage(watermill.NewUUID(), []byte(payload))); err != nil {
				panic(err)
			}
		}
	}
	steps := map[string][]string{}
	for range 6 {
		msg := <-messages
		_, id := redispubsub.SplitTopic(msg.Metadata.Get(redispubsub.MetadataTopic))
		steps[id] = append(steps[id], string(msg.Payload))
		msg.Ack()
	}
	fmt.Println("a:", steps["a"])
	fmt.Println("b:", steps["b"])
	// Output:
	// a: [{"step":1} {"step":2} {"step":3}]
	// b: [{"step":1} {"step":2} {"step":3}]
}
