package redispubsub_test

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// BenchmarkPublishCluster compares classic PUBLISH with sharded SPUBLISH on
// a 3-master cluster: 32 goroutines per GOMAXPROCS publish to 64 channels
// spread over the slots. It reports msgs/s and the Pub/Sub messages the
// nodes sent each other over the cluster bus per published message
// (bus-msgs/op: CLUSTER INFO's cluster_stats_messages_publish_sent and
// _publishshard_sent, summed over the nodes). Compare the two msgs/s:
//
//	go test -run '^$' -bench PublishCluster -count 6 . | tee bench.txt && benchstat bench.txt
func BenchmarkPublishCluster(b *testing.B) {
	cluster := redistest.StartCluster(b, 3)
	const channels = 64
	for _, sharded := range []bool{false, true} {
		b.Run(map[bool]string{false: "classic", true: "sharded"}[sharded], func(b *testing.B) {
			pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: cluster.NewClient(b), Sharded: sharded}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer pub.Close()
			busBefore := busPubSubMessages(b, cluster)
			var next atomic.Int64
			b.SetParallelism(32)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				topic := fmt.Sprintf("bench-%d", next.Add(1)%channels)
				for pb.Next() {
					if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), eventPayload)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(busPubSubMessages(b, cluster)-busBefore)/float64(b.N), "bus-msgs/op")
		})
	}
}

// busPubSubMessages sums the Pub/Sub messages that the cluster's nodes sent
// over the cluster bus.
func busPubSubMessages(b *testing.B, cluster *redistest.Cluster) int64 {
	var sum int64
	for _, n := range cluster.Nodes() {
		info := n.Do(b, "CLUSTER", "INFO").(string)
		for _, field := range []string{"cluster_stats_messages_publish_sent", "cluster_stats_messages_publishshard_sent"} {
			if v, ok := infoValue(info, field); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					b.Fatal(err)
				}
				sum += n
			}
		}
	}
	return sum
}
