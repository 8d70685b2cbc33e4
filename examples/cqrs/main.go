// Command cqrs runs Watermill's CQRS component on Redis Pub/Sub: commands
// go through a CommandBus to a CommandProcessor, whose handler publishes
// events on an EventBus, which an EventProcessor hands to two event
// handlers.
//
//	BookRoom ──CommandBus──▶ book-room ──EventBus──▶ RoomBooked ──▶ billing
//	                                                            └──▶ notifications
//
// Every handler gets a Subscriber of its own, so each event handler sees
// every event (Redis Pub/Sub fans out; there are no consumer groups). The
// router must be running before anything is sent: a command or event
// published while no handler is subscribed is lost, as the run shows at the
// start. The program sends three commands, waits for the six events (two
// handlers) and shuts down, within 10 seconds.
//
//	go run ./examples/cqrs                                    # embedded Redis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/cqrs # your Redis
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
)

// BookRoom is a command.
type BookRoom struct {
	BookingID string `json:"booking_id"`
	Room      int    `json:"room"`
	Nights    int    `json:"nights"`
}

// RoomBooked is an event.
type RoomBooked struct {
	BookingID string `json:"booking_id"`
	Room      int    `json:"room"`
	Price     int    `json:"price"`
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cqrs:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // the whole run is bounded
	defer cancel()
	client, closeRedis, err := exampleredis.Client()
	if err != nil {
		return err
	}
	defer closeRedis()

	// The libraries only speak up about problems; the story is told by say.
	logger := exampleredis.Logger()
	say := exampleredis.Printer(out)

	const prefix = "example:cqrs:" // every Redis channel is prefix + topic
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: prefix}, logger)
	if err != nil {
		return err
	}
	defer pub.Close()
	var subscribers []*redispubsub.Subscriber // the router closes them too; Close is idempotent
	defer func() {
		for _, sub := range subscribers {
			_ = sub.Close()
		}
	}()
	newSubscriber := func() (message.Subscriber, error) {
		sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: prefix}, logger)
		if err == nil {
			subscribers = append(subscribers, sub)
		}
		return sub, err
	}

	marshaler := cqrs.JSONMarshaler{GenerateName: cqrs.StructName}
	commandBus, err := cqrs.NewCommandBusWithConfig(pub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) {
			return "commands." + p.CommandName, nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	if err != nil {
		return err
	}
	eventBus, err := cqrs.NewEventBusWithConfig(pub, cqrs.EventBusConfig{
		GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) {
			return "events." + p.EventName, nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	if err != nil {
		return err
	}

	// Nobody is subscribed yet: this command is lost, and the Publisher
	// counts it.
	if err := commandBus.Send(ctx, &BookRoom{BookingID: "too-early", Room: 1, Nights: 1}); err != nil {
		return err
	}
	say("sent BookRoom too-early before any handler subscribed: lost (Publisher.Stats().NoSubscribers=%d)",
		pub.Stats().NoSubscribers)

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, logger)
	if err != nil {
		return err
	}
	commandProcessor, err := cqrs.NewCommandProcessorWithConfig(router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) {
			return "commands." + p.CommandName, nil
		},
		SubscriberConstructor: func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return newSubscriber()
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	if err != nil {
		return err
	}
	eventProcessor, err := cqrs.NewEventProcessorWithConfig(router, cqrs.EventProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
			return "events." + p.EventName, nil
		},
		SubscriberConstructor: func(cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return newSubscriber()
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	if err != nil {
		return err
	}

	err = commandProcessor.AddHandlers(cqrs.NewCommandHandler("book-room",
		func(ctx context.Context, cmd *BookRoom) error {
			price := 120 * cmd.Nights
			say("book-room: booking %s: room %d for %d nights, %d EUR", cmd.BookingID, cmd.Room, cmd.Nights, price)
			return eventBus.Publish(ctx, &RoomBooked{BookingID: cmd.BookingID, Room: cmd.Room, Price: price})
		}))
	if err != nil {
		return err
	}
	handled := make(chan string, 16)
	for _, name := range []string{"billing", "notifications"} {
		err = eventProcessor.AddHandlers(cqrs.NewEventHandler(name,
			func(ctx context.Context, ev *RoomBooked) error {
				msg := cqrs.OriginalMessageFromCtx(ctx)
				say("%s: %s %s: booking %s, %d EUR",
					name, msg.Metadata.Get("name"), msg.UUID[:8], ev.BookingID, ev.Price)
				handled <- name
				return nil
			}))
		if err != nil {
			return err
		}
	}

	var runErr error
	routerDone := make(chan struct{})
	go func() { defer close(routerDone); runErr = router.Run(ctx) }()
	defer func() { _ = router.Close(); <-routerDone }()
	select {
	case <-router.Running(): // every handler subscribed, confirmed by Redis
	case <-routerDone:
		return fmt.Errorf("router stopped before it was running: %w", runErr)
	}
	say("router running: book-room, billing, notifications")

	commands := []*BookRoom{
		{BookingID: "b-1", Room: 101, Nights: 2},
		{BookingID: "b-2", Room: 204, Nights: 1},
		{BookingID: "b-3", Room: 305, Nights: 5},
	}
	for _, cmd := range commands {
		if err := commandBus.Send(ctx, cmd); err != nil {
			return err
		}
	}
	say("sent %d BookRoom commands", len(commands))

	for range 2 * len(commands) { // each event reaches both handlers
		select {
		case <-handled:
		case <-ctx.Done():
			return fmt.Errorf("not every event was handled in time: %w", ctx.Err())
		}
	}
	say("all %d events handled by both handlers; shutting down", len(commands))
	return nil
}
