package sse_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
	"github.com/alkdev/watermill-redispubsub/sse"
)

// streams is n streams of one topic, each read by a goroutine that counts
// the events it receives.
type streams struct {
	conns []net.Conn
	once  sync.Once
	// received counts the events of every stream; next is signalled
	// whenever it reaches a multiple of n.
	received atomic.Int64
	n        int64
	next     chan struct{}
	readers  sync.WaitGroup
}

// openStreams opens n streams of "fanout" through the in-process transport
// (no file descriptors: net.Pipe), with the handler's defaults.
func openStreams(tb testing.TB, ts *testServer, n int) *streams {
	tb.Helper()
	s := &streams{conns: make([]net.Conn, n), n: int64(n), next: make(chan struct{}, 1)}
	tb.Cleanup(s.close)
	testutil.Parallel(tb, n, 64, func(i int) error {
		conn, err := ts.l.Dial()
		if err != nil {
			return err
		}
		s.conns[i] = conn
		c, err := request(conn, "/events?topic=fanout", nil, 512)
		if err != nil {
			return err
		}
		if c.resp.StatusCode != 200 {
			return fmt.Errorf("stream %d: %s", i, c.resp.Status)
		}
		s.readers.Add(1)
		go s.read(c.r)
		return nil
	})
	return s
}

// close closes every client and waits for their readers.
func (s *streams) close() {
	s.once.Do(func() {
		for _, c := range s.conns {
			if c != nil {
				_ = c.Close()
			}
		}
		s.readers.Wait()
	})
}

// read counts the events of one stream until it ends.
func (s *streams) read(r *bufio.Reader) {
	defer s.readers.Done()
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		if strings.HasPrefix(string(line), "event: fanout") && s.received.Add(1)%s.n == 0 {
			s.next <- struct{}{}
		}
	}
}

// fanOut publishes one event and returns how long until every stream read it.
func (s *streams) fanOut(tb testing.TB, publish func()) time.Duration {
	start := time.Now()
	publish()
	testutil.Wait(tb, s.next, "every stream to read the event")
	return time.Since(start)
}

// heapAndStacks is the memory of the live Go values (marked by a collection,
// after a first one emptied the sync.Pools) and of the goroutine stacks.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(samples)
	return samples[0].Value.Uint64() + samples[1].Value.Uint64()
}

// idleStream is the least an SSE server does per stream, the yardstick of
// the memory per stream: it sends the headers and waits for the client to
// go.
func idleStream(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(w).Flush()
	<-r.Context().Done()
}

// 10,000 concurrent streams of one topic on one process, with the defaults
// (MaxStreams is 10,000): each receives every event, and the memory per idle
// stream and the time to fan one event out to all are logged. The streams
// run over a real http.Server on an in-process transport (net.Pipe) rather
// than TCP, so that no file descriptor limit applies; the memory per stream
// includes its client (a goroutine and a 512-byte read buffer) and its
// pipe, and is compared with the same number of streams of idleStream (what
// net/http and the client cost alone). Under the race detector, 2,000
// streams.
func TestHandler_TenThousandStreams(t *testing.T) {
	n := sse.DefaultMaxStreams
	if testutil.Race {
		n = 2_000
	}
	pub, sub := redisPubSub(t)
	h, err := sse.NewHandler(sub, sse.Config{Authorize: allowAll})
	require.NoError(t, err)

	before := heapAndStacks()
	idle := openStreams(t, startHTTP(t, http.HandlerFunc(idleStream), func() error { return nil }), n)
	yardstick := float64(heapAndStacks()-before) / float64(n)
	idle.close()

	ts := startServer(t, h)
	before = heapAndStacks()
	opened := time.Now()
	s := openStreams(t, ts, n)
	t.Logf("%d streams open in %v", n, time.Since(opened).Round(time.Millisecond))
	perStream := float64(heapAndStacks()-before) / float64(n)
	require.Equal(t, int64(n), h.Stats().Open)
	t.Logf("memory per idle stream (server and in-process client): %.1f KiB; a bare net/http stream and its client: %.1f KiB; the handler and its subscription add %.1f KiB",
		perStream/1024, yardstick/1024, (perStream-yardstick)/1024)

	for i := range 3 {
		took := s.fanOut(t, func() { publish(t, pub, "fanout", fmt.Sprint("u-", i), `{"n":1}`) })
		t.Logf("fan-out of one event to %d streams: %v", n, took.Round(time.Microsecond))
	}
	require.Equal(t, int64(3*n), s.received.Load())
	testutil.Eventually(t, func() bool { return h.Stats().Events == uint64(3*n) }, "every event counted")
}

// BenchmarkFanOut10000Streams: one event to 10,000 streams (ns/op is the time
// until every stream read it), and the memory per idle stream.
func BenchmarkFanOut10000Streams(b *testing.B) {
	n := sse.DefaultMaxStreams
	pub, sub := redisPubSub(b)
	h, err := sse.NewHandler(sub, sse.Config{Authorize: allowAll})
	require.NoError(b, err)
	ts := startServer(b, h)
	before := heapAndStacks()
	s := openStreams(b, ts, n)
	perStream := float64(heapAndStacks()-before) / float64(n)

	for i := 0; b.Loop(); i++ {
		s.fanOut(b, func() { publish(b, pub, "fanout", fmt.Sprint("u-", i), `{"n":1}`) })
	}
	b.ReportMetric(perStream, "B/stream") // after the loop, which resets the metrics
}
