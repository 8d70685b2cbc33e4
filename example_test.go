package redispubsub_test

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
)

// A Publisher and a Subscriber in a Watermill router: a handler turns each
// placed order into a confirmation, another prints the confirmations. The
// router's Running channel is closed once every handler's Subscribe
// returned, that is once Redis confirmed the subscriptions: what is
// published after it is delivered.
func Example() {
	client, closeRedis, err := exampleredis.Client() // REDIS_URL, or an embedded Redis
	if err != nil {
		panic(err)
	}
	defer closeRedis()
	logger := watermill.NopLogger{}

	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{
		Client:        client,
		ChannelPrefix: "example:", // every Redis channel is "example:" + topic
	}, logger)
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{
		Client:        client,
		ChannelPrefix: "example:",
	}, logger)
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		panic(err)
	}
	router.AddHandler("confirm", "order.placed", sub, "order.confirmed", pub,
		func(msg *message.Message) ([]*message.Message, error) {
			confirmed := fmt.Sprintf(`{"confirmed":%s}`, msg.Payload)
			return []*message.Message{message.NewMessage(watermill.NewUUID(), []byte(confirmed))}, nil
		})
	printed := make(chan struct{}, 3)
	router.AddConsumerHandler("print", "order.confirmed", sub, func(msg *message.Message) error {
		fmt.Println(string(msg.Payload))
		printed <- struct{}{}
		return nil // the router Acks the message
	})

	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(context.Background()) }()
	<-router.Running()
	for i := 1; i <= 3; i++ {
		order := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"order":%d}`, i))
		if err := pub.Publish("order.placed", order); err != nil {
			panic(err)
		}
	}
	for range 3 {
		<-printed
	}
	if err := router.Close(); err != nil {
		panic(err)
	}
	if err := <-routerDone; err != nil {
		panic(err)
	}
	// Output:
	// {"confirmed":{"order":1}}
	// {"confirmed":{"order":2}}
	// {"confirmed":{"order":3}}
}

// Subscribe returns once Redis confirmed the subscription; each message
// comes with the UUID and metadata it was published with. The next message
// of a subscription comes after the Ack; a Nack delivers the same message
// again (after NackResendSleep).
func ExampleSubscriber_Subscribe() {
	client, closeRedis, err := exampleredis.Client()
	if err != nil {
		panic(err)
	}
	defer closeRedis()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the subscription: its channel is closed

	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	messages, err := sub.Subscribe(ctx, "call.responded:uuid-123")
	if err != nil {
		panic(err)
	}
	msg := message.NewMessage("7a1e3c52-0d6b-4f0e-9a43-1f2d5c6b7e80", []byte(`{"ok":true}`))
	msg.Metadata.Set("trace", "t-1")
	if err := pub.Publish("call.responded:uuid-123", msg); err != nil {
		panic(err)
	}

	first := <-messages
	fmt.Println("received", first.UUID, string(first.Payload), first.Metadata.Get("trace"))
	first.Nack() // not handled: comes again
	again := <-messages
	fmt.Println("again   ", again.UUID, string(again.Payload))
	again.Ack()
	// Output:
	// received 7a1e3c52-0d6b-4f0e-9a43-1f2d5c6b7e80 {"ok":true} t-1
	// again    7a1e3c52-0d6b-4f0e-9a43-1f2d5c6b7e80 {"ok":true}
}

// SubscribePattern receives every topic that matches a Redis glob pattern;
// each message carries its concrete topic in the metadata MetadataTopic.
// ChannelPrefix is escaped in the pattern, so only the topic part matches.
func ExampleSubscriber_SubscribePattern() {
	client, closeRedis, err := exampleredis.Client()
	if err != nil {
		panic(err)
	}
	defer closeRedis()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: "example:"}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: "example:"}, nil)
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	messages, err := sub.SubscribePattern(ctx, "user.*")
	if err != nil {
		panic(err)
	}
	for _, topic := range []string{"user.created:u-1", "order.placed:o-1", "user.deleted:u-2"} {
		if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(`{}`))); err != nil {
			panic(err)
		}
	}
	var topics []string
	for range 2 { // order.placed does not match
		msg := <-messages
		topics = append(topics, msg.Metadata.Get(redispubsub.MetadataTopic))
		msg.Ack()
	}
	slices.Sort(topics) // the order of different channels is not guaranteed
	fmt.Println(topics)
	// Output:
	// [user.created:u-1 user.deleted:u-2]
}

// The default body on the wire: a JSON envelope that a TypeScript Redis
// event target reads as its event's detail. A payload that is not JSON
// travels as base64, marked by payload_encoding. (A Publisher also stamps
// the metadata with its sequence numbers, rps_*, unless
// DisableSequenceNumbers.)
func ExampleJSONEnvelopeMarshaler() {
	var m redispubsub.JSONEnvelopeMarshaler
	msg := message.NewMessage("7a1e3c52-0d6b-4f0e-9a43-1f2d5c6b7e80", []byte(`{"ok": true}`))
	msg.Metadata.Set("trace", "t-1")
	body, err := m.Marshal("call.responded:uuid-123", msg)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(body))

	body, err = m.Marshal("file.uploaded:f-1", message.NewMessage("0b9d5c1e-8f3a-4c2b-b7d6-5e4f3a2b1c0d", []byte{0, 1, 2, 0xfb, 0xff}))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(body))
	decoded, err := m.Unmarshal("file.uploaded:f-1", body)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%x\n", decoded.Payload)
	// Output:
	// {"type":"call.responded","id":"uuid-123","payload":{"ok":true},"uuid":"7a1e3c52-0d6b-4f0e-9a43-1f2d5c6b7e80","metadata":{"trace":"t-1"}}
	// {"type":"file.uploaded","id":"f-1","payload":"AAEC+/8=","payload_encoding":"base64","uuid":"0b9d5c1e-8f3a-4c2b-b7d6-5e4f3a2b1c0d"}
	// 000102fbff
}

// RawJSONMarshaler's body is the payload alone, what graphql-yoga's
// createPubSub publishes and reads; UUID and metadata do not travel, and a
// payload that is not JSON is refused (Publish sends nothing of the call).
func ExampleRawJSONMarshaler() {
	var m redispubsub.RawJSONMarshaler
	msg := message.NewMessage("7a1e3c52-0d6b-4f0e-9a43-1f2d5c6b7e80", []byte(`{"ok":true}`))
	msg.Metadata.Set("trace", "t-1")
	body, err := m.Marshal("call.responded:uuid-123", msg)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(body))

	_, err = m.Marshal("call.responded:uuid-123", message.NewMessage(watermill.NewUUID(), []byte("not json")))
	fmt.Println(errors.Is(err, redispubsub.ErrPayloadNotJSON))
	// Output:
	// {"ok":true}
	// true
}

// MsgpackMarshaler's body is [1, uuid, metadata, payload] in MessagePack:
// binary-safe, it round-trips any payload bytes, the UUID and the metadata
// exactly. Only Go peers read it.
func ExampleMsgpackMarshaler() {
	var m redispubsub.MsgpackMarshaler
	msg := message.NewMessage("u-1", []byte{0, 0xff})
	msg.Metadata.Set("k", "v")
	body, err := m.Marshal("blob", msg)
	if err != nil {
		panic(err)
	}
	fmt.Printf("% x\n", body)
	decoded, err := m.Unmarshal("blob", body)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s %v %x\n", decoded.UUID, decoded.Metadata, decoded.Payload)
	// Output:
	// 94 01 a3 75 2d 31 81 a1 6b a1 76 c4 02 00 ff
	// u-1 map[k:v] 00ff
}

// Topic builds the topic of an event, "type" or "type:id"; an event type
// never contains ':'.
func ExampleTopic() {
	topic, err := redispubsub.Topic("call.responded", "uuid-123")
	fmt.Println(topic, err)
	topic, err = redispubsub.Topic("user.created", "")
	fmt.Println(topic, err)
	_, err = redispubsub.Topic("call:responded", "uuid-123")
	fmt.Println(errors.Is(err, redispubsub.ErrInvalidEventType))
	// Output:
	// call.responded:uuid-123 <nil>
	// user.created <nil>
	// true
}

// SplitTopic splits a topic at its first ':' into the event type and the id,
// which may itself contain ':'.
func ExampleSplitTopic() {
	for _, topic := range []string{"call.responded:uuid-123", "user.created", "order.updated:eu:42"} {
		eventType, id := redispubsub.SplitTopic(topic)
		fmt.Printf("%q %q\n", eventType, id)
	}
	// Output:
	// "call.responded" "uuid-123"
	// "user.created" ""
	// "order.updated" "eu:42"
}

// OrderShipped is the payload of the EventTarget example's events.
type OrderShipped struct {
	Carrier string `json:"carrier"`
}

// An EventTarget over this package's Publisher and Subscriber: typed events
// on the topic "type:id", JSON on the wire. AddEventListener returns once the
// subscription is live; a topic's listeners are called one after another, in
// the order they were added, for one event after another; a listener added
// with Once is removed after its first event. The events reach the
// listeners through Redis, as they reach every other subscriber (a
// TypeScript Redis event target included).
func ExampleEventTarget() {
	client, closeRedis, err := exampleredis.Client()
	if err != nil {
		panic(err)
	}
	defer closeRedis()
	ctx := context.Background()

	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: "example:"}, nil)
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: "example:"}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	target, err := redispubsub.NewEventTarget[OrderShipped](pub, sub)
	if err != nil {
		panic(err)
	}
	defer target.Close() // before the Subscriber and the Publisher: it does not close them

	calls := make(chan string, 3)
	_, err = target.AddEventListener(ctx, "order.shipped:o-1", func(_ context.Context, ev redispubsub.Event[OrderShipped]) {
		calls <- fmt.Sprintf("every: %s %s by %s", ev.Type, ev.ID, ev.Payload.Carrier)
	})
	if err != nil {
		panic(err)
	}
	_, err = target.AddEventListener(ctx, "order.shipped:o-1", func(_ context.Context, ev redispubsub.Event[OrderShipped]) {
		calls <- fmt.Sprintf("once:  %s %s by %s", ev.Type, ev.ID, ev.Payload.Carrier)
	}, redispubsub.Once())
	if err != nil {
		panic(err)
	}

	for _, carrier := range []string{"ups", "dhl"} {
		ev := redispubsub.Event[OrderShipped]{Type: "order.shipped", ID: "o-1", Payload: OrderShipped{Carrier: carrier}}
		if err := target.DispatchEvent(ctx, ev); err != nil {
			panic(err)
		}
	}
	for range 3 {
		fmt.Println(<-calls)
	}
	// Output:
	// every: order.shipped o-1 by ups
	// once:  order.shipped o-1 by ups
	// every: order.shipped o-1 by dhl
}

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
