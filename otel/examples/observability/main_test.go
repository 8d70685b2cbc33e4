package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// TestTracesBesideMetrics runs the service on the embedded Redis, places two
// orders and checks what it shows: each order is one trace of five spans,
// each the child of the one before, written as JSON lines by the stdout
// exporter; the listener saw the trace; /metrics counts the publications.
func TestTracesBesideMetrics(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Setenv("REDIS_URL", "") // the embedded miniredis, whatever the environment says

	var out testutil.Buffer
	s, err := start(context.Background(), &out, "127.0.0.1:0")
	require.NoError(t, err)
	defer s.close()

	const orders = 2
	for n := 1; n <= orders; n++ {
		require.NoError(t, s.placeOrder(context.Background(), n))
	}
	testutil.Eventually(t, func() bool { return strings.Contains(out.String(), "counted order 2,") }, "the second order to be counted")
	resp, err := http.Get("http://" + s.addr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, err)
	assert.Contains(t, string(body), `redispubsub_publisher_published_total{name="orders"} 4`, "the orders and the counted ones")
	s.close() // writes the spans still batched

	type spanContext struct{ TraceID, SpanID string }
	type span struct {
		Name        string
		SpanContext spanContext
		Parent      spanContext
	}
	traces := make(map[string]map[string]span) // by trace id, by name
	listened := make(map[string]bool)          // trace ids the listener printed
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "counted order "); ok {
			_, traceID, _ := strings.Cut(id, ", trace ")
			listened[traceID] = true
			continue
		}
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var sp span
		require.NoError(t, json.Unmarshal([]byte(line), &sp), line)
		if traces[sp.SpanContext.TraceID] == nil {
			traces[sp.SpanContext.TraceID] = make(map[string]span)
		}
		traces[sp.SpanContext.TraceID][sp.Name] = sp
	}
	require.Len(t, traces, orders, "one trace per order")
	chain := []string{"place order", "send orders", "process orders", "send orders.counted", "process orders.counted"}
	for traceID, spans := range traces {
		require.Len(t, spans, len(chain), "trace %s", traceID)
		for i := 1; i < len(chain); i++ {
			assert.Equal(t, spans[chain[i-1]].SpanContext.SpanID, spans[chain[i]].Parent.SpanID, "%s is the parent of %s", chain[i-1], chain[i])
		}
		assert.True(t, listened[traceID], "the listener printed trace %s", traceID)
	}
}
