package main

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// TestMetricsMove starts the service on the embedded Redis, scrapes /metrics
// over HTTP, places orders and checks that the adapter's counters and
// Watermill's moved by as much.
func TestMetricsMove(t *testing.T) {
	defer goleak.VerifyNone(t)
	s, out := startOnEmbeddedRedis(t)
	defer s.close()

	before := scrape(t, s.addr)
	require.Equal(t, 0.0, before[`redispubsub_publisher_published_total{name="orders"}`])
	require.Equal(t, 0.0, before[`redispubsub_subscriber_acked_total{name="router"}`])

	const orders = 3
	for n := 1; n <= orders; n++ {
		require.NoError(t, s.placeOrder(context.Background(), n))
	}
	// Each order is acked twice: by "count" and, as orders.counted, by "log".
	var after map[string]float64
	testutil.Eventually(t, func() bool {
		after = scrape(t, s.addr)
		return after[`redispubsub_subscriber_acked_total{name="router"}`] == 2*orders
	}, "acked to reach %d", 2*orders)

	for metric, want := range map[string]float64{
		`redispubsub_publisher_published_total{name="orders"}`:                                                             2 * orders, // the orders and the counted ones
		`redispubsub_publisher_failed_total{name="orders"}`:                                                                0,
		`redispubsub_subscriber_received_total{name="router"}`:                                                             2 * orders,
		`redispubsub_subscriber_delivered_total{name="router"}`:                                                            2 * orders,
		`redispubsub_subscriber_gaps_total{name="router"}`:                                                                 0,
		`watermill_handler_execution_time_seconds_count{handler_name="count",success="true"}`:                              orders,
		`watermill_handler_execution_time_seconds_count{handler_name="log",success="true"}`:                                orders,
		`watermill_publish_time_seconds_count{handler_name="count",publisher_name="redispubsub.Publisher",success="true"}`: orders,
	} {
		require.Equal(t, want, after[metric], "%s in\n%v", metric, after)
	}
	s.close()
	require.Equal(t, orders, strings.Count(out.String(), "counted order "), out.String())
}

// scrape GETs /metrics and returns every sample by its name and labels, as
// the text format writes them.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	samples := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		samples[line[:i]] = v
	}
	require.NoError(t, sc.Err())
	return samples
}

// startOnEmbeddedRedis starts the service on a free port and the embedded
// miniredis, whatever the environment says, and returns it and its output.
// The caller closes it (before checking for goroutines left behind).
func startOnEmbeddedRedis(t *testing.T) (*service, *testutil.Buffer) {
	t.Helper()
	t.Setenv("REDIS_URL", "")
	out := new(testutil.Buffer)
	s, err := start(context.Background(), out, "127.0.0.1:0")
	require.NoError(t, err)
	return s, out
}
