package metrics

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	tu "github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// TestCollectorReadsRealStats runs two Publishers and a Subscriber on a real
// server and checks that a scrape says what their Stats say.
func TestCollectorReadsRealStats(t *testing.T) {
	srv := redistest.Start(t)
	newPub := func() *redispubsub.Publisher {
		pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, nil)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, pub.Close()) })
		return pub
	}
	orders, audit := newPub(), newPub()
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })

	c := NewCollector()
	require.NoError(t, c.AddPublisher("orders", orders))
	require.NoError(t, c.AddPublisher("audit", audit))
	require.NoError(t, c.AddSubscriber("orders", sub))
	registry := registryOf(t, c)
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)

	ch, _ := tu.Subscribe(t, sub, "orders")
	for i := range 3 {
		require.NoError(t, orders.Publish("orders", message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"n":%d}`, i))))
	}
	require.NoError(t, audit.Publish("audit", message.NewMessage(watermill.NewUUID(), []byte(`{}`))))
	for range 2 {
		tu.Receive(t, ch).Ack()
	}
	tu.Receive(t, ch).Nack()
	tu.Receive(t, ch).Ack() // the redelivery
	tu.Eventually(t, func() bool { return sub.Stats().Acked == 3 }, "three messages acked")
	tu.Eventually(t, func() bool { return sub.Health(context.Background()) == nil }, "the Subscriber is ready")

	got := gather(t, registry)
	// The liveness probes run on their own clock: their figures are
	// checked against each other, then left out.
	probes := map[string]float64{}
	for _, metric := range []string{"probes_sent_total", "probes_received_total", "deaf_connections_total", "probe_round_trip_seconds_count", "ready"} {
		key := `redispubsub_subscriber_` + metric + `{name="orders"}`
		require.Contains(t, got, key)
		probes[metric] = got[key]
		delete(got, key)
	}
	require.Positive(t, probes["probes_received_total"])
	require.GreaterOrEqual(t, probes["probes_sent_total"], probes["probes_received_total"]-1)        // one may be on its way
	require.InDelta(t, probes["probes_received_total"], probes["probe_round_trip_seconds_count"], 1) // one may arrive during the scrape
	require.Zero(t, probes["deaf_connections_total"])
	require.Equal(t, 1.0, probes["ready"])
	want := map[string]float64{
		`redispubsub_publisher_published_total{name="orders"}`:        3,
		`redispubsub_publisher_no_subscribers_total{name="orders"}`:   0,
		`redispubsub_publisher_failed_total{name="orders"}`:           0,
		`redispubsub_publisher_published_total{name="audit"}`:         1,
		`redispubsub_publisher_no_subscribers_total{name="audit"}`:    1,
		`redispubsub_publisher_failed_total{name="audit"}`:            0,
		`redispubsub_subscriber_received_total{name="orders"}`:        3,
		`redispubsub_subscriber_decode_failures_total{name="orders"}`: 0,
		`redispubsub_subscriber_delivered_total{name="orders"}`:       4,
		`redispubsub_subscriber_acked_total{name="orders"}`:           3,
		`redispubsub_subscriber_nacked_total{name="orders"}`:          1,
		`redispubsub_subscriber_dropped_total{name="orders"}`:         0,
		`redispubsub_subscriber_buffered_bytes{name="orders"}`:        0,
		`redispubsub_subscriber_oversized_total{name="orders"}`:       0,
		`redispubsub_subscriber_discarded_total{name="orders"}`:       0,
		`redispubsub_subscriber_reconnects_total{name="orders"}`:      0,
		`redispubsub_subscriber_gaps_total{name="orders"}`:            0,
		`redispubsub_subscriber_possible_gaps_total{name="orders"}`:   0,
		`redispubsub_subscriber_duplicates_total{name="orders"}`:      0,
		`redispubsub_subscriber_recovered_total{name="orders"}`:       0,
		`redispubsub_subscriber_unrecovered_total{name="orders"}`:     0,
		`redispubsub_subscriber_history_lost_total{name="orders"}`:    0,
	}
	require.Equal(t, want, got)

	c.RemovePublisher("audit")
	c.RemoveSubscriber("orders")
	got = gather(t, registry)
	require.Len(t, got, len(publisherStats), "only the orders Publisher is left: %v", got)
	require.Contains(t, got, `redispubsub_publisher_published_total{name="orders"}`)
}

// A Subscriber's readiness gauge is 1 while Health says ready, 0 once it is
// closed.
func TestCollectorReadiness(t *testing.T) {
	srv := redistest.Start(t)
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	c := NewCollector()
	require.NoError(t, c.AddSubscriber("s", sub))
	registry := registryOf(t, c)
	const ready = `redispubsub_subscriber_ready{name="s"}`
	tu.Eventually(t, func() bool { return gather(t, registry)[ready] == 1 }, "ready")
	require.NoError(t, sub.Close())
	require.Equal(t, 0.0, gather(t, registry)[ready])
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// gather scrapes g and returns every sample as `metric{name="..."}` → value.
func gather(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	families, err := g.Gather()
	require.NoError(t, err)
	samples := make(map[string]float64)
	for _, f := range families {
		for _, m := range f.GetMetric() {
			require.Len(t, m.GetLabel(), 1)
			key := fmt.Sprintf("%s{%s=%q}", f.GetName(), m.GetLabel()[0].GetName(), m.GetLabel()[0].GetValue())
			if m.GetGauge() != nil {
				samples[key] = m.GetGauge().GetValue()
				continue
			}
			if h := m.GetHistogram(); h != nil {
				count := fmt.Sprintf("%s_count{%s=%q}", f.GetName(), m.GetLabel()[0].GetName(), m.GetLabel()[0].GetValue())
				samples[count] = float64(h.GetSampleCount())
				continue
			}
			require.NotNil(t, m.GetCounter(), key)
			samples[key] = m.GetCounter().GetValue()
		}
	}
	return samples
}

// TestEveryStatsFieldIsExported fails when a field of PublisherStats or
// SubscriberStats has no line in the tables of stats.go.
func TestEveryStatsFieldIsExported(t *testing.T) {
	t.Run("PublisherStats", func(t *testing.T) { requireEveryField(t, publisherStats) })
	t.Run("SubscriberStats", func(t *testing.T) { requireEveryField(t, subscriberStats) })
}

// requireEveryField gives every field of S a distinct value and checks that
// the table reads each one, exactly once.
func requireEveryField[S any](t *testing.T, table []stat[S]) {
	var s S
	v := reflect.ValueOf(&s).Elem()
	var want []float64
	for i := range v.NumField() {
		f := v.Field(i)
		if _, skipped := notExported[v.Type().Field(i).Name]; skipped {
			continue
		}
		switch f.Kind() {
		case reflect.Uint64, reflect.Uint32, reflect.Uint:
			f.SetUint(uint64(i + 1))
		case reflect.Int64, reflect.Int32, reflect.Int:
			f.SetInt(int64(i + 1))
		default:
			t.Fatalf("%s.%s is a %s: export it in stats.go and teach this test its kind", v.Type(), v.Type().Field(i).Name, f.Kind())
		}
		want = append(want, float64(i+1))
	}
	var got []float64
	for _, st := range table {
		got = append(got, st.value(s))
	}
	slices.Sort(got)
	require.Equal(t, want, got, "every field of %s read by exactly one line of the table", v.Type())
}

type fixedPublisher redispubsub.PublisherStats

func (p fixedPublisher) Stats() redispubsub.PublisherStats { return redispubsub.PublisherStats(p) }

func TestNames(t *testing.T) {
	c := NewCollector()
	require.NoError(t, c.AddPublisher("a", fixedPublisher{Published: 1}))
	require.ErrorIs(t, c.AddPublisher("a", fixedPublisher{}), ErrNameTaken)
	require.ErrorIs(t, c.AddPublisher("", fixedPublisher{}), ErrNameTaken)
	c.RemovePublisher("a")
	c.RemovePublisher("a") // nothing left to remove
	require.NoError(t, c.AddPublisher("a", fixedPublisher{Published: 2}))
	require.Equal(t, 2.0, gather(t, registryOf(t, c))[`redispubsub_publisher_published_total{name="a"}`])
}

// registryOf registers c with a registry that checks Collect against
// Describe at every scrape.
func registryOf(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	r := prometheus.NewPedanticRegistry()
	require.NoError(t, r.Register(c))
	return r
}

// fixedStats is a Subscriber of another make: its Stats are given.
type fixedStats redispubsub.SubscriberStats

func (f fixedStats) Stats() redispubsub.SubscriberStats { return redispubsub.SubscriberStats(f) }

// A Subscriber whose round-trip histogram has no count per bound is
// scraped without it, not with a panic; its counters are still exported.
func TestCollectorHistogramWithoutACountPerBound(t *testing.T) {
	c := NewCollector()
	stats := fixedStats{Received: 7, ProbeRoundTrip: redispubsub.DurationHistogram{Bounds: []time.Duration{time.Millisecond, time.Second}}}
	require.NoError(t, c.AddSubscriber("other", stats))
	got := gather(t, registryOf(t, c))
	assert.Equal(t, 7.0, got[`redispubsub_subscriber_received_total{name="other"}`])
	assert.NotContains(t, got, `redispubsub_subscriber_probe_round_trip_seconds_count{name="other"}`)
}
