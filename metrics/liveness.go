package metrics

import (
	"context"
	"sync"

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

// healthSources are the Health methods of the Subscribers, by name.
type healthSources struct {
	mu      sync.Mutex
	sources map[string]healther
}

func (h *healthSources) add(name string, s Subscriber) {
	hs, ok := s.(healther)
	if !ok {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sources == nil {
		h.sources = make(map[string]healther)
	}
	h.sources[name] = hs
}

func (h *healthSources) remove(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.sources, name)
}

func (h *healthSources) get(name string) healther {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sources[name]
}

// collectLiveness sends the liveness metrics of the Subscriber name, whose
// Stats are s. A Subscriber's Health reads its state and sends nothing to
// Redis, so a scrape stays cheap.
func (c *Collector) collectLiveness(name string, s redispubsub.SubscriberStats, ch chan<- prometheus.Metric) {
	h := s.ProbeRoundTrip
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, bound := range h.Bounds {
		buckets[bound.Seconds()] = h.Buckets[i] // one count per bound
	}
	ch <- prometheus.MustNewConstHistogram(roundTripDesc, h.Count, h.Sum.Seconds(), buckets, name)
	if hs := c.health.get(name); hs != nil {
		ready := 0.0
		if hs.Health(context.Background()) == nil {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready, name)
	}
}
