package bench

import (
	"context"
	"fmt"
	"slices"
)

// caseSpec is one case of the benchmark: what it measures, on which
// systems, and the rows it fills.
type caseSpec struct {
	id    string
	sized bool // measured once per payload size
	// size is the payload size of a case that is not sized; 0: none.
	size   int
	rounds bool // measured Config.Rounds times
	// cluster: runs on Config.NewClusterClient's cluster, and not at all
	// without one.
	cluster bool
	// systems are the ids of the systems it runs on; nil: all.
	systems []string
	metrics []metric
	// note explains the case under the table; nil: nothing to add.
	note func(Config) string
	// measure runs the case on t, the system opened on Config.NewClient's
	// server, with topic (without the prefix) and payloads of size bytes,
	// returning one value per metric.
	measure func(ctx context.Context, r *runner, t transport, topic string, size int) ([]float64, error)
	// measureSystem, set instead of measure, runs the case on the system
	// s, which it opens itself, as often as it needs.
	measureSystem func(ctx context.Context, r *runner, s system, topic string, size int) ([]float64, error)
}

func (c *caseSpec) runs(system string) bool {
	return c.systems == nil || slices.Contains(c.systems, system)
}

// metric is one row of a case (one per payload size for a sized case).
type metric struct {
	name  string // short, for the progress line
	unit  Unit
	title func(Config) string
	// noRatio: adapter / raw says nothing (raw go-redis holds nothing of
	// the kind).
	noRatio bool
	// quotient, when set, makes the row the quotient of the rows of the
	// case's metrics quotient[0] / quotient[1] (their medians, as the
	// table shows them); the value measure returns for it, the quotient of
	// the round, goes to the progress line only.
	quotient *[2]int
}

// subscribeSystems are the systems of the subscribe cases: the Subscriber's
// marshaler plays no part in subscribing, and a redisstream subscription is
// a polling reader, not a subscription Redis confirms.
var subscribeSystems = []string{sysRaw, sysAdapter, sysGoChannel}

// cases are the cases in the order they run and appear in the table.
var cases = []*caseSpec{
	{
		id:     "e2e-batch",
		sized:  true,
		rounds: true,
		metrics: []metric{
			{name: "msg/s", unit: PerSecond, title: func(c Config) string {
				return fmt.Sprintf("end to end, batches of %d (msg/s)", c.Batch)
			}},
			{name: "allocs/msg", unit: Count, title: func(c Config) string {
				return fmt.Sprintf("allocations per delivered message, batches of %d", c.Batch)
			}},
		},
		note: func(c Config) string {
			return fmt.Sprintf("*end to end, batches of %d*: one goroutine publishes %d messages per call (raw go-redis: a pipeline of "+
				"%d PUBLISH), one subscription receives them and Acks each (raw go-redis: ReceiveMessage in a loop); "+
				"the publisher stays at most %s messages or %s ahead of the consumer. Allocations are the whole "+
				"process's, publisher and consumer, per message.", c.Batch, c.Batch, c.Batch, formatCount(maxInFlight), formatSize(maxInFlightBytes))
		},
		measure: func(ctx context.Context, r *runner, t transport, topic string, size int) ([]float64, error) {
			res, err := r.throughput(ctx, t, []string{topic}, size, 1, r.cfg.Batch, true)
			return []float64{res.rate, res.allocs}, err
		},
	},
	{
		id:     "e2e-parallel",
		sized:  true,
		rounds: true,
		metrics: []metric{
			{name: "msg/s", unit: PerSecond, title: func(c Config) string {
				return fmt.Sprintf("end to end, %d goroutines publishing single messages (msg/s)", c.Publishers)
			}},
		},
		note: func(c Config) string {
			return fmt.Sprintf("*%d goroutines*: each publishes one message per call; the same consumer.", c.Publishers)
		},
		measure: func(ctx context.Context, r *runner, t transport, topic string, size int) ([]float64, error) {
			res, err := r.throughput(ctx, t, []string{topic}, size, r.cfg.Publishers, 1, true)
			return []float64{res.rate}, err
		},
	},
	{
		id:     "publish",
		sized:  true,
		rounds: true,
		metrics: []metric{
			{name: "msg/s", unit: PerSecond, title: func(c Config) string {
				return fmt.Sprintf("publish only, batches of %d (msg/s)", c.Batch)
			}},
		},
		note: func(Config) string {
			return "*publish only*: as end to end with batches, nobody subscribed (gochannel then has nothing to do)."
		},
		measure: func(ctx context.Context, r *runner, t transport, topic string, size int) ([]float64, error) {
			res, err := r.throughput(ctx, t, []string{topic}, size, 1, r.cfg.Batch, false)
			return []float64{res.rate}, err
		},
	},
	{
		id:    "latency",
		sized: true,
		metrics: []metric{
			{name: "p50", unit: Seconds, title: func(Config) string { return "latency publish → receive, p50" }},
			{name: "p99", unit: Seconds, title: func(Config) string { return "latency publish → receive, p99" }},
		},
		note: func(c Config) string {
			return fmt.Sprintf("*latency*: %s messages one at a time, each after the previous one arrived, at most %s a second; "+
				"from the call of Publish to the message in the consumer's hands.", formatCount(c.LatencySamples), formatCount(c.LatencyRate))
		},
		measure: func(ctx context.Context, r *runner, t transport, topic string, size int) ([]float64, error) {
			p50, p99, err := r.latency(ctx, t, topic, size)
			return []float64{p50.Seconds(), p99.Seconds()}, err
		},
	},
	{
		id:      "subscribe",
		systems: subscribeSystems,
		metrics: []metric{
			{name: "time", unit: Seconds, title: func(c Config) string {
				return fmt.Sprintf("%s topics subscribed at once: time until all confirmed", formatCount(c.Topics))
			}},
		},
		note: topicsNote,
		measure: func(ctx context.Context, r *runner, t transport, topic string, _ int) ([]float64, error) {
			res, err := r.subscribeTopics(ctx, t, topic, r.cfg.Topics, r.cfg.Topics, false)
			return []float64{res.elapsed.Seconds()}, err
		},
	},
	{
		id:      "subscribe-many",
		systems: subscribeSystems,
		metrics: manyTopicsMetrics(func(c Config) string {
			return fmt.Sprintf("%s topics", formatCount(c.ManyTopics))
		}),
		note: topicsNote,
		measure: func(ctx context.Context, r *runner, t transport, topic string, _ int) ([]float64, error) {
			res, err := r.subscribeTopics(ctx, t, topic, r.cfg.ManyTopics, r.cfg.SubscribeWorkers, false)
			return res.values(), err
		},
	},
	{
		id:      "eventtarget-many",
		systems: subscribeSystems,
		metrics: manyTopicsMetrics(func(c Config) string {
			return fmt.Sprintf("EventTarget, %s topics", formatCount(c.ManyTopics))
		}),
		note: func(Config) string {
			return "*EventTarget*: the same with AddEventListener, one listener per topic; the raw go-redis column " +
				"is plain SUBSCRIBE again."
		},
		measure: func(ctx context.Context, r *runner, t transport, topic string, _ int) ([]float64, error) {
			res, err := r.subscribeTopics(ctx, t, topic, r.cfg.ManyTopics, r.cfg.SubscribeWorkers, true)
			return res.values(), err
		},
	},
	routerCases[0],
	routerCases[1],
	probesCase,
	clusterPublish,
}

// topicsNote is the note of the subscribe cases.
func topicsNote(c Config) string {
	return fmt.Sprintf("*topics*: one Subscriber, Subscribe from one goroutine per topic (%s at once for the %s topics, "+
		"%s at a time for the %s); raw go-redis: one PubSub, SUBSCRIBE of %s channels per call, until every "+
		"confirmation arrived. Heap: growth of the live heap after a GC, per topic; stacks: growth of the goroutine "+
		"stacks, per topic. The marshaler plays no part; redisstream has no subscriptions to confirm.",
		formatCount(c.Topics), formatCount(c.Topics), formatCount(c.SubscribeWorkers), formatCount(c.ManyTopics), formatCount(rawChunk))
}

// manyTopicsMetrics are the rows of a case that subscribes ManyTopics
// topics, described by head.
func manyTopicsMetrics(head func(Config) string) []metric {
	return []metric{
		{name: "time", unit: Seconds, title: func(c Config) string { return head(c) + ": time until all confirmed" }},
		{name: "heap/topic", unit: Bytes, title: func(c Config) string { return head(c) + ": heap per idle topic" }},
		{name: "stack/topic", unit: Bytes, title: func(c Config) string { return head(c) + ": stacks per idle topic" }, noRatio: true},
	}
}

// CaseIDs returns the ids of the cases, in the order they run:
//
//   - e2e-batch: end to end, Publish of Batch messages per call, a consumer
//     that Acks each; messages/s and allocations per delivered message.
//   - e2e-parallel: end to end, Publishers goroutines publishing single
//     messages; messages/s.
//   - publish: Publish of Batch messages per call, nobody subscribed.
//   - latency: publish → receive, one message at a time at LatencyRate;
//     p50 and p99.
//   - subscribe: Topics topics subscribed at once; time until all are
//     confirmed.
//   - subscribe-many: ManyTopics topics from SubscribeWorkers goroutines at a
//     time on one Subscriber; time until all are confirmed, heap and stacks
//     per idle topic.
//   - eventtarget-many: the same with an EventTarget, one listener per
//     topic.
//   - router-1ms: a Watermill router whose handler sleeps 1 ms per
//     message, on the adapter with SubscriberConfig.MaxInFlight 1, 16 and
//     64 (a row each), and on gochannel with its default; messages/s.
//   - router-10ms: the same with a handler of 10 ms, MaxInFlight 1 and 64,
//     and the quotient of the two.
//   - cluster-publish: on a Redis Cluster (Config.NewClusterClient; not run
//     without one), classic PUBLISH and sharded SPUBLISH from Publishers
//     goroutines over ClusterChannels channels: messages/s publishing, and
//     end to end; cluster bus messages per published message.
func CaseIDs() []string {
	ids := make([]string, len(cases))
	for i, c := range cases {
		ids[i] = c.id
	}
	return ids
}
