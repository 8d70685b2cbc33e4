package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// stat is one exported figure of a Stats value S: its metric name (after
// "redispubsub_publisher_" or "redispubsub_subscriber_"), help text,
// Prometheus type and how to read it.
type stat[S any] struct {
	name  string
	help  string
	kind  prometheus.ValueType
	value func(S) float64
}

// counter is the kind of every figure that only grows; a figure that can go
// down (a level, such as bytes held) is a prometheus.GaugeValue.
const counter = prometheus.CounterValue

// publisherStats lists every PublisherStats figure the Collector exports.
// A new field of PublisherStats is exported by adding its line here.
var publisherStats = []stat[redispubsub.PublisherStats]{
	{"published_total", "Messages Redis accepted.", counter, func(s redispubsub.PublisherStats) float64 { return float64(s.Published) }},
	{"no_subscribers_total", "Messages Redis accepted and delivered to no subscriber at all.", counter, func(s redispubsub.PublisherStats) float64 { return float64(s.NoSubscribers) }},
	{"failed_total", "Messages that were not sent or not confirmed by Redis.", counter, func(s redispubsub.PublisherStats) float64 { return float64(s.Failed) }},
}

// subscriberStats lists every SubscriberStats figure the Collector exports.
// A new field of SubscriberStats is exported by adding its line here.
var subscriberStats = []stat[redispubsub.SubscriberStats]{
	{"received_total", "Message bodies read from Redis.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Received) }},
	{"decode_failures_total", "Bodies the Marshaler could not decode (logged and skipped).", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.DecodeFailures) }},
	{"delivered_total", "Messages sent to subscriptions, redeliveries after Nack included.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Delivered) }},
	{"acked_total", "Messages the consumers acknowledged.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Acked) }},
	{"nacked_total", "Messages the consumers rejected (redelivered).", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Nacked) }},
	{"dropped_total", "Messages lost because the Subscriber's buffer was spent or a subscription's QueueSize cap reached.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Dropped) }},
	{"buffered_bytes", "Bytes of received messages the subscriptions hold now, counted against BufferBytes.", prometheus.GaugeValue, func(s redispubsub.SubscriberStats) float64 { return float64(s.BufferedBytes) }},
	{"oversized_total", "Bodies larger than MaxMessageBytes, skipped without decoding.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Oversized) }},
	{"discarded_total", "Messages still queued or unacknowledged when their subscription ended.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Discarded) }},
	{"reconnects_total", "Connections to Redis re-established after a loss.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Reconnects) }},
	{"gaps_total", "Stamped messages never received (lost by Redis Pub/Sub or never sent).", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Gaps) }},
	{"possible_gaps_total", "Streams first seen after a reconnect whose start may have been lost (or came before the subscription).", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.PossibleGaps) }},
	{"duplicates_total", "Stamped messages received a second time (a retried pipeline) and dropped.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Duplicates) }},
	{"recovered_total", "Messages missed live and delivered from a channel's history (Recover).", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Recovered) }},
	{"unrecovered_total", "Messages missed that the channel's history no longer held (Recover).", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.Unrecovered) }},
	{"history_lost_total", "Times a channel's history was found lost (its epoch changed) by a recovering Subscriber.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.HistoryLost) }},
	{"probes_sent_total", "Liveness probes Redis accepted.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.ProbesSent) }},
	{"probes_received_total", "Liveness probes that arrived on their connection.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.ProbesReceived) }},
	{"deaf_connections_total", "Connections dropped because a liveness probe Redis accepted did not arrive in time.", counter, func(s redispubsub.SubscriberStats) float64 { return float64(s.DeafConnections) }},
}

// notExported names the Stats fields the Collector leaves out, and why.
var notExported = map[string]string{
	"DroppedByTopic": "a label per topic would have no bound (a service may hold 100,000 topics); dropped_total is their sum and the log names the topic",
	"ProbeRoundTrip": "a histogram, not one figure: exported as probe_round_trip_seconds by liveness.go",
}
