// Command eventtarget shows the typed AddEventListener / DispatchEvent API on Redis Pub/Sub:
// `go run ./examples/eventtarget` (embedded Redis), or with REDIS_URL=redis://127.0.0.1:6379/0.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
)

type Call struct{ Status string } // the events' payload, JSON on the wire

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "eventtarget:", err)
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
	pub, _ := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: "example:"}, nil) // fails only without a Client
	defer pub.Close()
	sub, _ := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client, ChannelPrefix: "example:"}, nil)
	defer sub.Close()
	target, _ := redispubsub.NewEventTarget[Call](pub, sub)
	defer target.Close() // runs first: removes every listener and waits for running ones

	received := make(chan string, 2)
	l, err := target.AddEventListener(ctx, "call.responded:uuid-123", func(_ context.Context, ev redispubsub.Event[Call]) {
		received <- fmt.Sprintf("type %s, id %s, status %s", ev.Type, ev.ID, ev.Payload.Status)
	}) // returns once Redis confirmed the subscription: whatever is dispatched from now on arrives
	for _, status := range []string{"ringing", "answered"} { // on the channel example:call.responded:uuid-123
		if err == nil {
			err = target.DispatchEvent(ctx, redispubsub.Event[Call]{Type: "call.responded", ID: "uuid-123", Payload: Call{status}})
		}
	}
	for i := 0; i < 2 && err == nil; i++ {
		select {
		case line := <-received:
			fmt.Fprintln(out, "received:", line)
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	l.Remove() // the topic's last listener (nil-safe): its Redis subscription ends
	return err
}
