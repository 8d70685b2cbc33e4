package tests

// Helpers of the fault tests (fault_test.go). Their names start with
// "fault" so that other files of the package can add helpers of their own.

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// faultClient returns a go-redis client of addr, closed at the end of the
// test, with the options every fault test chose explicitly, because they
// decide how fast a client notices and survives a fault:
//
//   - DialTimeout 1s: a dial to 127.0.0.1 either connects or is refused at
//     once; 1s only matters for a blackholed proxy.
//   - DialerRetries 1: one dial per connection attempt. go-redis's default
//     (5 dials 100ms apart) would hide 400ms inside every failed attempt of
//     the Subscriber, which has its own backoff (ReconnectBackoffMin/Max).
//   - MaxRetries -1: a command is never retried. A PUBLISH is not idempotent:
//     a pipeline retried after its connection broke may deliver twice.
//   - PoolSize 64: go-redis stops dialling after PoolSize consecutive failed
//     dials and only probes once a second until one succeeds. 64 is far
//     more than a test's outage costs, so that this breaker, which is
//     go-redis's and not the adapter's, does not blur the measured times.
//   - maintenance notifications off: nothing in these tests uses them, and
//     they add a handshake round trip to every dial.
//
// configure, when not nil, adjusts the options.
func faultClient(t testing.TB, addr string, configure func(*redis.Options)) *redis.Client {
	t.Helper()
	opts := faultClientOptions(addr)
	if configure != nil {
		configure(opts)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func faultClientOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr:                     addr,
		DialTimeout:              time.Second,
		DialerRetries:            1,
		MaxRetries:               -1,
		PoolSize:                 64,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// faultSubscriber returns a Subscriber of config that logs into log, closed
// at the end of the test, where its Close must succeed.
func faultSubscriber(t testing.TB, config redispubsub.SubscriberConfig, log watermill.LoggerAdapter) *redispubsub.Subscriber {
	t.Helper()
	sub, err := redispubsub.NewSubscriber(config, log)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	return sub
}

// faultLog is a watermill.LoggerAdapter that writes Info and Error logs to
// t.Log until the test's cleanups are over, and records every Error log so
// that a test can wait for one.
type faultLog struct {
	shared *faultLogShared
	fields watermill.LogFields
}

type faultLogShared struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
	entries []faultLogEntry
	changed chan struct{} // closed and replaced when an entry is added
}

// faultLogEntry is one Error log.
type faultLogEntry struct {
	at  time.Time
	msg string
	err error
}

func newFaultLog(t testing.TB) *faultLog {
	shared := &faultLogShared{t: t, changed: make(chan struct{})}
	// Registered before the Publisher or Subscriber that logs into it, so
	// it runs after their Close.
	t.Cleanup(func() {
		shared.mu.Lock()
		shared.stopped = true
		shared.mu.Unlock()
	})
	return &faultLog{shared: shared}
}

func (l *faultLog) Error(msg string, err error, fields watermill.LogFields) {
	s := l.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, faultLogEntry{at: time.Now(), msg: msg, err: err})
	close(s.changed)
	s.changed = make(chan struct{})
	if !s.stopped {
		s.t.Logf("%s ERROR %s: %v %v", time.Now().Format("15:04:05.000"), msg, err, l.fields.Add(fields))
	}
}

func (l *faultLog) Info(msg string, fields watermill.LogFields) {
	s := l.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.t.Logf("%s INFO %s %v", time.Now().Format("15:04:05.000"), msg, l.fields.Add(fields))
	}
}

func (l *faultLog) Debug(string, watermill.LogFields) {}
func (l *faultLog) Trace(string, watermill.LogFields) {}

func (l *faultLog) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return &faultLog{shared: l.shared, fields: l.fields.Add(fields)}
}

// waitError waits, bounded by timeout, for an Error log from the from-th
// on that match accepts, and returns it with its index.
func (l *faultLog) waitError(t testing.TB, from int, timeout time.Duration, what string, match func(faultLogEntry) bool) (faultLogEntry, int) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	s := l.shared
	for {
		s.mu.Lock()
		for i := from; i < len(s.entries); i++ {
			if match(s.entries[i]) {
				e := s.entries[i]
				s.mu.Unlock()
				return e, i
			}
		}
		from = len(s.entries)
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no error log %s within %v", what, timeout)
		}
	}
}

// faultPayload is the payload of the messages of the fault tests.
type faultPayload struct {
	// N numbers the messages of one topic from 0, in publishing order; it
	// is the Publisher's sequence number on the topic's channel minus one.
	N int `json:"n"`
	// Phase is the phase of the test the message was made in.
	Phase int32 `json:"phase,omitempty"`
	// Marker marks the last message of a topic.
	Marker bool `json:"marker,omitempty"`
	// Probe marks a message of a probing peer that does not stamp sequence
	// numbers; its N means nothing.
	Probe bool `json:"probe,omitempty"`
}

func faultMessage(p faultPayload) *message.Message {
	body, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return message.NewMessage(watermill.NewUUID(), body)
}

// faultConsumer reads one subscription's channel, Acks every message and
// records what it saw.
type faultConsumer struct {
	name string
	// fixedTopic is the subscription's topic; empty for a pattern
	// subscription, whose messages carry their topic in metadata.
	fixedTopic string

	mu       sync.Mutex
	seen     map[string]map[int]int // topic → N → times received
	total    int                    // sequence-stamped messages, duplicates included
	probes   int
	bad      []string // payloads that did not parse
	markers  map[string]bool
	changed  chan struct{} // closed and replaced on every message
	waiters  []faultWaiter
	finished chan struct{} // closed when the channel was closed
}

type faultWaiter struct {
	match func(faultPayload) bool
	at    chan time.Time
}

// newFaultConsumer starts reading ch. topic is the subscription's topic, or
// "" for a pattern subscription.
// faultPatternConsumer subscribes to pattern until the end of the test and
// consumes what arrives.
func faultPatternConsumer(t *testing.T, sub *redispubsub.Subscriber, pattern string) *faultConsumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.SubscribePattern(ctx, pattern)
	require.NoError(t, err)
	return newFaultConsumer(pattern, "", ch)
}

func newFaultConsumer(name, topic string, ch <-chan *message.Message) *faultConsumer {
	c := &faultConsumer{
		name: name, fixedTopic: topic,
		seen:     make(map[string]map[int]int),
		markers:  make(map[string]bool),
		changed:  make(chan struct{}),
		finished: make(chan struct{}),
	}
	go c.run(ch) // ends when the Subscriber closes ch; goleak checks it
	return c
}

func (c *faultConsumer) run(ch <-chan *message.Message) {
	defer close(c.finished)
	for msg := range ch {
		now := time.Now()
		topic := c.fixedTopic
		if topic == "" {
			topic = msg.Metadata.Get(redispubsub.MetadataTopic)
		}
		var p faultPayload
		err := json.Unmarshal(msg.Payload, &p)
		msg.Ack()
		c.mu.Lock()
		switch {
		case err != nil:
			c.bad = append(c.bad, string(msg.Payload))
		case p.Probe:
			c.probes++
		default:
			c.total++
			if c.seen[topic] == nil {
				c.seen[topic] = make(map[int]int)
			}
			c.seen[topic][p.N]++
			if p.Marker {
				c.markers[topic] = true
			}
		}
		if err == nil {
			kept := c.waiters[:0]
			for _, w := range c.waiters {
				if w.match(p) {
					w.at <- now
					continue
				}
				kept = append(kept, w)
			}
			c.waiters = kept
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

// firstWhere returns a channel that receives the time at which the first
// message from now on that match accepts was received.
func (c *faultConsumer) firstWhere(match func(faultPayload) bool) <-chan time.Time {
	at := make(chan time.Time, 1)
	c.mu.Lock()
	c.waiters = append(c.waiters, faultWaiter{match: match, at: at})
	c.mu.Unlock()
	return at
}

// waitUntil waits, bounded by testutil.Timeout, until cond holds; cond is
// called with the consumer's lock held after every message.
func (c *faultConsumer) waitUntil(t testing.TB, what string, cond func(c *faultConsumer) bool) {
	t.Helper()
	deadline := time.NewTimer(testutil.Timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok := cond(c)
		changed := c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-c.finished:
			c.mu.Lock()
			ok := cond(c)
			c.mu.Unlock()
			if !ok {
				t.Fatalf("consumer %s: channel closed before %s", c.name, what)
			}
			return
		case <-deadline.C:
			t.Fatalf("consumer %s: not %s within %v", c.name, what, testutil.Timeout)
		}
	}
}

// waitMarkers waits until the marker of every topic arrived.
func (c *faultConsumer) waitMarkers(t testing.TB, topics ...string) {
	t.Helper()
	c.waitUntil(t, "got the markers of "+strings.Join(topics, ", "), func(c *faultConsumer) bool {
		for _, topic := range topics {
			if !c.markers[topic] {
				return false
			}
		}
		return true
	})
}

// received returns the number of distinct sequence-stamped messages
// received on topic.
func (c *faultConsumer) received(topic string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen[topic])
}

// missing returns the N in [0, published) never received on topic, and the
// number of duplicates received.
func (c *faultConsumer) missing(topic string, published int) (missing []int, duplicates int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := c.seen[topic]
	for n := range published {
		switch times := seen[n]; {
		case times == 0:
			missing = append(missing, n)
		case times > 1:
			duplicates += times - 1
		}
	}
	for n := range seen {
		if n < 0 || n >= published {
			duplicates += seen[n] // never published: count as unexpected
		}
	}
	return missing, duplicates
}

// faultGaps records the GapEvents of a Subscriber.
type faultGaps struct {
	mu     sync.Mutex
	events []redispubsub.GapEvent
}

func (g *faultGaps) record(ev redispubsub.GapEvent) {
	g.mu.Lock()
	g.events = append(g.events, ev)
	g.mu.Unlock()
}

// missing returns, for topic, how many times each N was reported missing
// (sequence number N+1 in a gap).
func (g *faultGaps) missing(topic string) map[int]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[int]int)
	for _, ev := range g.events {
		if ev.Topic != topic {
			continue
		}
		for seq := ev.First; seq <= ev.Last; seq++ {
			out[int(seq)-1]++
		}
	}
	return out
}

func (g *faultGaps) total() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var sum uint64
	for _, ev := range g.events {
		sum += ev.Missing()
	}
	return sum
}

// faultFlow publishes numbered messages round-robin on topics, one message
// per Publish call, each with its own deadline, until stopped, and records
// what every call returned.
type faultFlow struct {
	pub      *redispubsub.Publisher
	topics   []string
	deadline time.Duration // of each message's context
	interval time.Duration // between two Publish calls; 0 for none

	phase atomic.Int32

	mu        sync.Mutex
	next      map[string]int // next N per topic
	ok, fail  int            // messages whose Publish returned nil / an error
	okByPhase map[int32]int
	firstOK   map[int32]time.Time // first successful return per phase
	overshoot time.Duration       // worst return past a message's deadline
	lastErr   error
	changed   chan struct{}

	stop, stopped chan struct{}
}

func startFaultFlow(t testing.TB, pub *redispubsub.Publisher, topics []string, deadline, interval time.Duration) *faultFlow {
	f := &faultFlow{
		pub: pub, topics: topics, deadline: deadline, interval: interval,
		next:      make(map[string]int),
		okByPhase: make(map[int32]int),
		firstOK:   make(map[int32]time.Time),
		changed:   make(chan struct{}),
		stop:      make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	f.phase.Store(1)
	go f.run()
	t.Cleanup(func() { f.halt(t) })
	return f
}

func (f *faultFlow) run() {
	defer close(f.stopped)
	var tick <-chan time.Time
	if f.interval > 0 {
		ticker := time.NewTicker(f.interval)
		defer ticker.Stop()
		tick = ticker.C
	}
	for i := 0; ; i++ {
		select {
		case <-f.stop:
			return
		default:
		}
		if tick != nil {
			select {
			case <-f.stop:
				return
			case <-tick:
			}
		}
		topic := f.topics[i%len(f.topics)]
		phase := f.phase.Load()
		f.mu.Lock()
		n := f.next[topic]
		f.next[topic]++
		f.mu.Unlock()
		msg := faultMessage(faultPayload{N: n, Phase: phase})
		ctx, cancel := context.WithTimeout(context.Background(), f.deadline)
		msg.SetContext(ctx)
		deadline, _ := ctx.Deadline()
		err := f.pub.Publish(topic, msg)
		returned := time.Now()
		cancel()
		f.mu.Lock()
		if err == nil {
			f.ok++
			f.okByPhase[phase]++
			if _, ok := f.firstOK[phase]; !ok {
				f.firstOK[phase] = returned
			}
		} else {
			f.fail++
			f.lastErr = err
		}
		f.overshoot = max(f.overshoot, returned.Sub(deadline))
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}
}

// halt stops the flow and waits, bounded by testutil.Timeout, until its
// last Publish returned.
func (f *faultFlow) halt(t testing.TB) {
	t.Helper()
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	testutil.Wait(t, f.stopped, "the publishing flow to stop")
}

// waitUntil waits, bounded by testutil.Timeout, until cond holds; cond is
// called with the flow's lock held after every Publish.
func (f *faultFlow) waitUntil(t testing.TB, what string, cond func(f *faultFlow) bool) {
	t.Helper()
	deadline := time.NewTimer(testutil.Timeout)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		ok := cond(f)
		changed := f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("publishing flow: not %s within %v", what, testutil.Timeout)
		}
	}
}

// published returns the number of messages the flow made for topic.
func (f *faultFlow) published(topic string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.next[topic]
}

// faultPublishMarkers publishes the marker of every topic, numbered after
// the flow's last message of that topic, and returns the number of
// messages of each topic, markers included.
func faultPublishMarkers(t testing.TB, pub *redispubsub.Publisher, next func(topic string) int, topics ...string) map[string]int {
	t.Helper()
	counts := make(map[string]int, len(topics))
	for _, topic := range topics {
		n := next(topic)
		msg := faultMessage(faultPayload{N: n, Marker: true})
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Timeout)
		msg.SetContext(ctx)
		require.NoError(t, pub.Publish(topic, msg), "marker of %s", topic)
		cancel()
		counts[topic] = n + 1
	}
	return counts
}

// faultCheckGaps checks that the Subscriber's gap count is exactly what its
// subscriptions never received: for every topic, the messages missing from
// each subscription that covers it are the ones the GapEvents name, and
// Stats().Gaps is their total. covers maps each consumer to its topics.
func faultCheckGaps(t testing.TB, sub *redispubsub.Subscriber, gaps *faultGaps, published map[string]int, covers map[*faultConsumer][]string) (missingTotal int) {
	t.Helper()
	wantByTopic := make(map[string]map[int]int)
	for c, topics := range covers {
		for _, topic := range topics {
			missing, dups := c.missing(topic, published[topic])
			require.Zero(t, dups, "%s: duplicates or unknown messages on %s", c.name, topic)
			if wantByTopic[topic] == nil {
				wantByTopic[topic] = make(map[int]int)
			}
			for _, n := range missing {
				wantByTopic[topic][n]++
			}
			missingTotal += len(missing)
			t.Logf("%s: %s: published %d, received %d, missing %d",
				c.name, topic, published[topic], c.received(topic), len(missing))
		}
	}
	// OnGap runs on the hooks' goroutine, after the gap is counted.
	testutil.Eventually(t, func() bool { return gaps.total() == sub.Stats().Gaps }, "OnGap called for every gap counted")
	for topic, want := range wantByTopic {
		require.Equal(t, want, gaps.missing(topic), "the GapEvents of %s name exactly the messages never received", topic)
	}
	stats := sub.Stats()
	require.EqualValues(t, missingTotal, stats.Gaps, "Stats().Gaps = published - received")
	require.EqualValues(t, stats.Gaps, gaps.total(), "OnGap reports every gap")
	return missingTotal
}

// faultHeap samples HeapInuse while running.
type faultHeap struct {
	max           atomic.Uint64
	samples       atomic.Int64
	stop, stopped chan struct{}
}

func startFaultHeap(every time.Duration) *faultHeap {
	h := &faultHeap{stop: make(chan struct{}), stopped: make(chan struct{})}
	h.sample()
	go func() {
		defer close(h.stopped)
		ticker := time.NewTicker(every)
		defer ticker.Stop()
		for {
			select {
			case <-h.stop:
				h.sample()
				return
			case <-ticker.C:
				h.sample()
			}
		}
	}()
	return h
}

func (h *faultHeap) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.samples.Add(1)
	for {
		old := h.max.Load()
		if ms.HeapInuse <= old || h.max.CompareAndSwap(old, ms.HeapInuse) {
			return
		}
	}
}

// halt stops sampling and returns the largest HeapInuse seen.
func (h *faultHeap) halt() uint64 {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	<-h.stopped
	return h.max.Load()
}

// faultHeapInuse returns HeapInuse after a full collection.
func faultHeapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func faultMiB(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
