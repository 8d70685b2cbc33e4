package redispubsub_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// The benchmarks compare the adapter with raw go-redis on the same server in
// the same run: read the ratio, not the absolute numbers. Reproduce with
//
//	go test -run '^$' -bench . -benchmem -count 6 . | tee bench.txt && benchstat bench.txt

// eventPayload is a typical small event, 160 bytes of JSON.
var eventPayload = []byte(`{"callId":"0b3f6f7e-6d3b-4b8e-9a51-2f4a5c7d9e10","status":"responded","durationMs":1234,"caller":{"id":"user-42","region":"eu-west-1"},"tags":["a","b"]}`)

func BenchmarkPublish(b *testing.B) {
	srv := redistest.Start(b)
	ctx := context.Background()

	b.Run("go-redis", func(b *testing.B) {
		client := srv.NewClient(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := client.Publish(ctx, "bench", eventPayload).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("adapter", func(b *testing.B) {
		pub := benchPublisher(b, srv)
		b.ReportAllocs()
		for b.Loop() {
			if err := pub.Publish("bench", message.NewMessage(watermill.NewUUID(), eventPayload)); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Many goroutines publishing at once: go-redis spreads them over its
	// connection pool; the adapter coalesces them into ordered pipelines.
	b.Run("go-redis-parallel", func(b *testing.B) {
		client := srv.NewClient(b)
		b.ReportAllocs()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := client.Publish(ctx, "bench", eventPayload).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("adapter-parallel", func(b *testing.B) {
		pub := benchPublisher(b, srv)
		b.ReportAllocs()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := pub.Publish("bench", message.NewMessage(watermill.NewUUID(), eventPayload)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkDelivery measures a message's way from publisher to consumer:
// batches of 100 published, each message received and acknowledged.
func BenchmarkDelivery(b *testing.B) {
	srv := redistest.Start(b)
	ctx := context.Background()
	const batch = 100

	b.Run("go-redis", func(b *testing.B) {
		client := srv.NewClient(b)
		ps := client.Subscribe(ctx, "delivery-raw")
		defer ps.Close()
		if _, err := ps.Receive(ctx); err != nil { // the subscribe confirmation
			b.Fatal(err)
		}
		ch := ps.Channel(redis.WithChannelSize(batch))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i%batch == 0 {
				_, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
					for range batch {
						p.Publish(ctx, "delivery-raw", eventPayload)
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			<-ch
		}
		drainRaw(ch, b.N)
	})
	b.Run("adapter", func(b *testing.B) {
		pub := benchPublisher(b, srv)
		sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: srv.NewClient(b)}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		ch, err := sub.Subscribe(ctx, "delivery")
		if err != nil {
			b.Fatal(err)
		}
		msgs := make([]*message.Message, batch)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i%batch == 0 {
				for j := range msgs {
					msgs[j] = message.NewMessage(strconv.Itoa(i+j), eventPayload)
				}
				if err := pub.Publish("delivery", msgs...); err != nil {
					b.Fatal(err)
				}
			}
			(<-ch).Ack()
		}
		for i := b.N; i%batch != 0; i++ {
			(<-ch).Ack()
		}
	})
}

// drainRaw reads what the last batch left in the channel.
func drainRaw(ch <-chan *redis.Message, n int) {
	for i := n; i%100 != 0; i++ {
		<-ch
	}
}

func benchPublisher(b *testing.B, srv *redistest.Server) *redispubsub.Publisher {
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(b)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close() })
	return pub
}
