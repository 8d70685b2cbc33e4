package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/exampleredis"
	"github.com/alkdev/watermill-redispubsub/metrics"
)

// A Collector registered with a Prometheus registry exports the Stats of a
// Publisher and a Subscriber under the label name; each scrape reads Stats
// afresh. Here a scrape of /metrics after two messages, one of which had a
// subscriber.
func ExampleNewCollector() {
	client, closeRedis, err := exampleredis.Client() // REDIS_URL, or an embedded Redis
	if err != nil {
		panic(err)
	}
	defer closeRedis()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: client}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	collector := metrics.NewCollector()
	if err := collector.AddPublisher("orders", pub); err != nil {
		panic(err)
	}
	if err := collector.AddSubscriber("orders", sub); err != nil {
		panic(err)
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collector)
	server := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer server.Close()

	messages, err := sub.Subscribe(ctx, "orders")
	if err != nil {
		panic(err)
	}
	for _, topic := range []string{"orders", "audit"} { // nobody listens to audit
		if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(`{}`))); err != nil {
			panic(err)
		}
	}
	(<-messages).Ack()

	resp, err := http.Get(server.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		line := lines.Text()
		for _, name := range []string{"publisher_published_total", "publisher_no_subscribers_total", "subscriber_received_total"} {
			if strings.HasPrefix(line, "redispubsub_"+name+"{") {
				fmt.Println(line)
			}
		}
	}
	// Output:
	// redispubsub_publisher_no_subscribers_total{name="orders"} 1
	// redispubsub_publisher_published_total{name="orders"} 2
	// redispubsub_subscriber_received_total{name="orders"} 1
}
