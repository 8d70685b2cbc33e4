package redispubsub_test

import (
	"context"
	"fmt"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
)

// Call is the model of a GraphQL schema's `callResponded(id: ID!): Call!`
// subscription, and the payload of the "call.responded" events.
type Call struct {
	Status string `json:"status"`
}

// subscriptionResolver is what gqlgen generates for the schema's
// Subscription type; calls is the application's EventTarget.
type subscriptionResolver struct {
	calls *redispubsub.EventTarget[Call]
}

// CallResponded streams the "call.responded:<id>" events of every instance of
// the service (they all publish on Redis) until the client's subscription
// ends, which ends ctx: Listen then closes events, and the goroutine closes
// the resolver's channel.
func (r *subscriptionResolver) CallResponded(ctx context.Context, id string) (<-chan *Call, error) {
	events, err := redispubsub.Listen(ctx, r.calls, "call.responded:"+id)
	if err != nil {
		return nil, err
	}
	calls := make(chan *Call)
	go func() {
		defer close(calls)
		for ev := range events {
			call := ev.Payload // a copy: the payload is shared with other listeners
			select {
			case calls <- &call:
			case <-ctx.Done():
				return
			}
		}
	}()
	return calls, nil
}

// A GraphQL subscription resolver over an EventTarget: Listen gives the
// channel of one topic's events, returned once the Redis subscription is
// live.
func ExampleListen() {
	client, closeRedis, err := exampleredis.Client() // REDIS_URL, or an embedded Redis
	if err != nil {
		panic(err)
	}
	defer closeRedis()
	pub, _ := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: "example:"}, nil)
	defer pub.Close()
	sub, _ := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: "example:"}, nil)
	defer sub.Close()
	calls, _ := redispubsub.NewEventTarget[Call](pub, sub)
	defer calls.Close()

	resolver := &subscriptionResolver{calls: calls}
	ctx, cancel := context.WithCancel(context.Background())
	updates, err := resolver.CallResponded(ctx, "uuid-123")
	if err != nil {
		panic(err)
	}
	for _, status := range []string{"ringing", "answered"} {
		ev := redispubsub.Event[Call]{Type: "call.responded", ID: "uuid-123", Payload: Call{Status: status}}
		if err := calls.DispatchEvent(context.Background(), ev); err != nil {
			panic(err)
		}
	}
	fmt.Println((<-updates).Status)
	fmt.Println((<-updates).Status)

	cancel() // the client unsubscribed
	for range updates {
	}
	fmt.Println("closed")
	// Output:
	// ringing
	// answered
	// closed
}
