package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// The liveness metrics of Subscribers: readiness as a gauge
// (redispubsub_subscriber_ready, 1 when Health returns nil, else 0) and the
// liveness probes' round trip as a histogram
// (redispubsub_subscriber_probe_round_trip_seconds).

var (
	readyDesc = prometheus.NewDesc("redispubsub_subscriber_ready",
		"1 when every connection of the Subscriber is live, resubscribed and (probes on) has received a probe; else 0.",
		[]string{"name"}, nil)
	roundTripDesc = prometheus.NewDesc("redispubsub_subscriber_probe_round_trip_seconds",
		"Time from a liveness probe's PUBLISH to its arrival on the Subscriber's connection.",
		[]string{"name"}, nil)
	livenessDescs = []*prometheus.Desc{readyDesc, roundTripDesc}
)

// healther is what a Subscriber has when its readiness can be exported.
type healther interface {
	Health(ctx context.Context) error
}

// collectLiveness sends the liveness metrics of the Subscriber sub, added
// as name, whose Stats are s; its readiness when it has a Health method. A
// Subscriber's Health reads its state and sends nothing to Redis, so a
// scrape stays cheap.
func (c *Collector) collectLiveness(name string, sub any, s redispubsub.SubscriberStats, ch chan<- prometheus.Metric) {
	h := s.ProbeRoundTrip
	if len(h.Buckets) == len(h.Bounds) { // one count per bound
		buckets := make(map[float64]uint64, len(h.Bounds))
		for i, bound := range h.Bounds {
			buckets[bound.Seconds()] = h.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(roundTripDesc, h.Count, h.Sum.Seconds(), buckets, name)
	}
	if hs, ok := sub.(healther); ok {
		ready := 0.0
		if hs.Health(context.Background()) == nil {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready, name)
	}
}
