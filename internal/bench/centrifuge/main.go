// Command centrifuge measures the anchor of the history rows of make bench:
// centrifuge's Redis broker (github.com/centrifugal/centrifuge v0.40.1,
// history in a Redis stream and PUBLISH in one Lua script per publication)
// on the Redis at -addr, with the workloads of internal/bench's history
// rows, and prints one JSON object of medians on stdout.
//
// It is a module of its own so that centrifuge (which needs Go 1.26 and
// brings rueidis, protobuf and a newer Prometheus client) stays out of the
// adapter's go.mod: cmd/benchtable runs it with go run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/centrifugal/centrifuge"
	"github.com/redis/rueidis"
)

// result is what the program prints: medians over the rounds.
type result struct {
	Version          string  `json:"version"`
	PublishHistory   float64 `json:"publish_history"`    // msg/s
	PublishNoHistory float64 `json:"publish_no_history"` // msg/s
	E2EHistory       float64 `json:"e2e_history"`        // msg/s
	HistoryRead      float64 `json:"history_read"`       // seconds to read the last Held
	BytesPerHeld     float64 `json:"bytes_per_held"`     // Redis memory per held message
}

func main() {
	addr := flag.String("addr", "", "host:port of the Redis")
	prefix := flag.String("prefix", "centrifuge-bench", "prefix of the broker's keys")
	duration := flag.Duration("duration", 300*time.Millisecond, "how long each round publishes")
	rounds := flag.Int("rounds", 3, "rounds of each throughput measurement (median)")
	publishers := flag.Int("publishers", 64, "goroutines publishing single publications")
	size := flag.Int("size", 256, "payload bytes")
	held := flag.Int("held", 10000, "history size, and what the history read reads")
	window := flag.Int("window", 1000, "end to end: how many publications the publishers may be ahead of the handler")
	flag.Parse()
	if *addr == "" {
		fail(fmt.Errorf("-addr is required"))
	}
	node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelError, LogHandler: func(centrifuge.LogEntry) {}})
	if err != nil {
		fail(err)
	}
	shard, err := centrifuge.NewRedisShard(node, centrifuge.RedisShardConfig{Address: *addr})
	if err != nil {
		fail(err)
	}
	broker, err := centrifuge.NewRedisBroker(node, centrifuge.RedisBrokerConfig{Prefix: *prefix, Shards: []*centrifuge.RedisShard{shard}})
	if err != nil {
		fail(err)
	}
	h := &handler{window: make(chan struct{}, *window)}
	if err := broker.RegisterBrokerEventHandler(h); err != nil {
		fail(err)
	}
	defer func() { _ = broker.Close(context.Background()) }()

	data := payload(*size)
	withHistory := centrifuge.PublishOptions{HistorySize: *held, HistoryTTL: 5 * time.Minute}
	var res result
	res.Version = centrifugeVersion()
	var pubH, pubN, e2e, reads []float64
	for round := range *rounds {
		ch := fmt.Sprintf("bench.%d", round)
		pubH = append(pubH, publishRate(broker, ch+".h", data, withHistory, *publishers, *duration))
		pubN = append(pubN, publishRate(broker, ch+".n", data, centrifuge.PublishOptions{}, *publishers, *duration))
		rate, err := e2eRate(broker, h, ch+".e", data, withHistory, *publishers, *duration)
		if err != nil {
			fail(err)
		}
		e2e = append(e2e, rate)
		read, err := historyRead(broker, ch+".r", data, withHistory, *held)
		if err != nil {
			fail(err)
		}
		reads = append(reads, read)
	}
	res.PublishHistory, res.PublishNoHistory, res.E2EHistory, res.HistoryRead = median(pubH), median(pubN), median(e2e), median(reads)
	// The last round's read channel holds Held publications.
	if res.BytesPerHeld, err = bytesPerHeld(*addr, *prefix, fmt.Sprintf("bench.%d.r", *rounds-1), *held); err != nil {
		fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fail(err)
	}
}

// centrifugeVersion is the version of centrifuge this program was built
// with, as go.mod requires it.
func centrifugeVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/centrifugal/centrifuge" {
				return dep.Version
			}
		}
	}
	return "(unknown version)"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "centrifuge bench:", err)
	os.Exit(1)
}

// payload returns a JSON object of exactly size bytes, as internal/bench's.
func payload(size int) []byte {
	return []byte(`{"d":"` + strings.Repeat("x", size-8) + `"}`)
}

// publishRate publishes from publishers goroutines for d, one publication
// per call, and returns publications per second.
func publishRate(b *centrifuge.RedisBroker, ch string, data []byte, opts centrifuge.PublishOptions, publishers int, d time.Duration) float64 {
	_, _ = b.Publish(ch, data, opts) // warm-up: the script loaded
	start := time.Now()
	n := publishFor(b, ch, data, opts, publishers, d)
	return float64(n) / time.Since(start).Seconds()
}

// publishFor publishes from publishers goroutines for d, one publication
// per call, and returns how many it published.
func publishFor(b *centrifuge.RedisBroker, ch string, data []byte, opts centrifuge.PublishOptions, publishers int, d time.Duration) uint64 {
	return publishWithin(b, ch, data, opts, publishers, d, nil)
}

// publishWithin is publishFor taking a slot of window (when not nil)
// before each publication.
func publishWithin(b *centrifuge.RedisBroker, ch string, data []byte, opts centrifuge.PublishOptions, publishers int, d time.Duration,
	window chan struct{}) uint64 {
	var n atomic.Uint64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if window != nil {
					window <- struct{}{}
				}
				if _, err := b.Publish(ch, data, opts); err != nil {
					fail(err)
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load()
}

// handler counts the publications the broker delivers, frees a slot of
// the end to end window for each, and closes the pending wait once its
// count is reached.
type handler struct {
	received atomic.Uint64
	window   chan struct{}
	mu       sync.Mutex
	wait     *countWait
}

// countWait is closed once received reaches at.
type countWait struct {
	at   uint64
	done chan struct{}
}

func (h *handler) HandlePublication(string, *centrifuge.Publication, centrifuge.StreamPosition, bool, *centrifuge.Publication) error {
	n := h.received.Add(1)
	select {
	case <-h.window:
	default:
	}
	h.mu.Lock()
	if h.wait != nil && n >= h.wait.at {
		close(h.wait.done)
		h.wait = nil
	}
	h.mu.Unlock()
	return nil
}

// until returns a channel closed once received reaches at.
func (h *handler) until(at uint64) <-chan struct{} {
	w := &countWait{at: at, done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.received.Load() >= at {
		close(w.done)
	} else {
		h.wait = w
	}
	return w.done
}
func (h *handler) HandleJoin(string, *centrifuge.ClientInfo) error  { return nil }
func (h *handler) HandleLeave(string, *centrifuge.ClientInfo) error { return nil }

// e2eRate is publishRate with a subscription of ch, counting until every
// publication arrived.
func e2eRate(b *centrifuge.RedisBroker, h *handler, ch string, data []byte, opts centrifuge.PublishOptions, publishers int, d time.Duration) (float64, error) {
	if err := b.Subscribe(ch); err != nil {
		return 0, err
	}
	defer func() { _ = b.Unsubscribe(ch) }()
	base := h.received.Load()
	live := h.until(base + 1)
	if _, err := b.Publish(ch, data, opts); err != nil {
		return 0, err
	}
	select {
	case <-live: // the subscription is live
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("e2e: the subscription delivered nothing within 10s")
	}
	base = h.received.Load()
	start := time.Now()
	// The publishers stay at most window publications ahead of the
	// handler, as the adapter's end to end rows do.
	n := publishWithin(b, ch, data, opts, publishers, d, h.window)
	select {
	case <-h.until(base + n):
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("e2e: received %d of %d", h.received.Load()-base, n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// historyRead publishes held publications on ch and returns the seconds
// one History call takes to read them all after the position before them.
func historyRead(b *centrifuge.RedisBroker, ch string, data []byte, opts centrifuge.PublishOptions, held int) (float64, error) {
	var first centrifuge.StreamPosition
	for i := range held {
		r, err := b.Publish(ch, data, opts)
		if err != nil {
			return 0, err
		}
		if i == 0 {
			first = r.StreamPosition
		}
	}
	since := centrifuge.StreamPosition{Offset: first.Offset - 1, Epoch: first.Epoch}
	start := time.Now()
	pubs, _, err := b.History(ch, centrifuge.HistoryOptions{Filter: centrifuge.HistoryFilter{Since: &since, Limit: -1}})
	took := time.Since(start).Seconds()
	if err != nil {
		return 0, err
	}
	if len(pubs) != held {
		return 0, fmt.Errorf("history read %d publications, want %d", len(pubs), held)
	}
	return took, nil
}

// bytesPerHeld is the Redis memory (MEMORY USAGE, every key of ch) per
// publication held.
func bytesPerHeld(addr, prefix, ch string, held int) (float64, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Do(ctx, c.B().Keys().Pattern(prefix+"*"+ch).Build()).AsStrSlice()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, k := range keys {
		n, err := c.Do(ctx, c.B().MemoryUsage().Key(k).Samples(0).Build()).AsInt64()
		if err != nil {
			return 0, err
		}
		total += n
	}
	if len(keys) == 0 {
		return 0, fmt.Errorf("no key of %q", ch)
	}
	return float64(total) / float64(held), nil
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[len(s)/2]
}
