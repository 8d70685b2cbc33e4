package tests

// The fault suite: what the Publisher and the Subscriber do when Redis, the
// network or a consumer fails. Every test starts its own redis-server, bounds
// every wait, and synchronises on events (channels, logs, polled conditions
// with a deadline), never on sleeps. Measured times and sizes are logged
// (go test -v -run Fault ./tests/).
//
// The full 1 GB of TestFaultStalledConsumerHeapBounded runs only without
// -race and without -short (about 5s; under -race 1 GB takes minutes, so
// 128 MB flow there); scripts/test.sh, which CI runs, runs it once more with
//
//	go test -count=1 -run '^TestFaultStalledConsumerHeapBounded$' ./tests/
//
// The last tests pin down bugs this suite found in the adapter, all fixed
// since: they are regression tests.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// faultSlack is what the fault tests allow on top of a bound for the
// scheduling of a loaded 2-core machine running the race detector.
const faultSlack = 250 * time.Millisecond

// The server is killed (SIGKILL) and restarted on the same port while
// messages flow on three topics and a pattern. The Subscriber resubscribes
// everything by itself, delivery resumes within 2s of the server answering
// again, the reconnect hook fires once, every Publish returns by its
// message's deadline (an error while the server is down) and the Publisher
// recovers; the gaps counted are exactly the messages never received.
//
// Clients: faultClient (DialTimeout 1s, DialerRetries 1, MaxRetries -1,
// PoolSize 64; see there why). With the Subscriber's default backoff (50ms
// doubling to ReconnectBackoffMax 500ms, ±20%), its next attempt comes at
// most ~0.6s after the server is back, and succeeds at once.
func TestFaultServerKillRestart(t *testing.T) {
	const resumeBound = 2 * time.Second
	topics := []string{"fault.restart.a", "fault.restart.b", "fault.restart.c"}
	const pattern = "fault.restart.*"

	srv := redistest.Start(t)
	log := newFaultLog(t)
	var gaps faultGaps
	reconnects := make(chan redispubsub.ReconnectEvent, 16)
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{
		Client:      faultClient(t, srv.Addr(), nil),
		OnGap:       gaps.record,
		OnReconnect: func(ev redispubsub.ReconnectEvent) { reconnects <- ev },
	}, log)

	consumers := make(map[*faultConsumer][]string)
	var all []*faultConsumer
	for _, topic := range topics {
		ch, _ := testutil.Subscribe(t, sub, topic)
		c := newFaultConsumer(topic, topic, ch)
		consumers[c] = []string{topic}
		all = append(all, c)
	}
	pc := faultPatternConsumer(t, sub, pattern)
	consumers[pc] = topics
	all = append(all, pc)

	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: faultClient(t, srv.Addr(), nil)}, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	const msgDeadline = 300 * time.Millisecond
	flow := startFaultFlow(t, pub, topics, msgDeadline, 2*time.Millisecond)

	for _, c := range all {
		c.waitUntil(t, "received 50 messages", func(c *faultConsumer) bool { return c.total >= 50 })
	}

	// Down.
	killedAt := time.Now()
	srv.Kill()
	// Publish while the server is down returns an error by the deadline.
	// (On a topic of its own: the flow's topics number their messages
	// after the Publisher's sequence numbers.)
	for range 3 {
		msg := faultMessage(faultPayload{Probe: true})
		ctx, cancel := context.WithTimeout(context.Background(), msgDeadline)
		msg.SetContext(ctx)
		deadline, _ := ctx.Deadline()
		err := pub.Publish("fault.down", msg)
		returned := time.Now()
		cancel()
		require.Error(t, err, "Publish to a killed server")
		require.LessOrEqual(t, returned.Sub(deadline), faultSlack, "Publish returned %v after its message's deadline", returned.Sub(deadline))
	}
	flow.mu.Lock()
	failedBefore := flow.fail
	flow.mu.Unlock()
	flow.waitUntil(t, "failing while the server is down", func(f *faultFlow) bool { return f.fail >= failedBefore+20 })
	lost, _ := log.waitError(t, 0, testutil.Timeout, "of the lost connection", func(e faultLogEntry) bool {
		return strings.Contains(e.msg, "connection lost")
	})
	flow.mu.Lock()
	t.Logf("Subscriber noticed the kill after %v; last Publish error: %v", lost.at.Sub(killedAt), flow.lastErr)
	flow.mu.Unlock()
	// Stay down until the Subscriber's backoff reached its maximum (50ms
	// doubling to 500ms: the 5th failed attempt waits ~500ms, and so does
	// the 6th), the worst case for how fast it comes back.
	from := 0
	for range 6 {
		_, i := log.waitError(t, from, testutil.Timeout, "of a failed attempt", func(e faultLogEntry) bool {
			return strings.Contains(e.msg, "Cannot connect")
		})
		from = i + 1
	}
	require.Empty(t, reconnects, "no reconnect while the server is down")

	// Up again.
	srv.Restart()
	restartedAt := time.Now()
	flow.phase.Store(2)
	t.Logf("server down for %v", restartedAt.Sub(killedAt))
	// Unstamped probes from a fresh client, like a TypeScript peer's, every
	// 10ms: the first one received measures when delivery resumed,
	// whatever the flow's Publisher is doing.
	arrivals := make([]<-chan time.Time, len(all))
	for i, c := range all {
		arrivals[i] = c.firstWhere(func(p faultPayload) bool { return p.Probe || p.Phase >= 2 })
	}
	stopProbes := faultProbe(t, srv.Addr(), topics, 10*time.Millisecond)
	var worst time.Duration
	for i, c := range all {
		resumed := testutil.Wait(t, arrivals[i], c.name+": a message after the restart").Sub(restartedAt)
		t.Logf("%s: first message %v after the restart", c.name, resumed)
		worst = max(worst, resumed)
	}
	stopProbes()
	t.Logf("delivery resumed %v after the restart (bound %v)", worst, resumeBound)
	require.Less(t, worst, resumeBound, "delivery resumes within 2s of the server being back")

	ev := testutil.Wait(t, reconnects, "the reconnect event")
	t.Logf("reconnect event: %+v", ev)
	require.Error(t, ev.Cause)
	require.Equal(t, len(topics), ev.Topics)
	require.Equal(t, 1, ev.Patterns)

	// The Publisher recovers.
	flow.waitUntil(t, "publishing again", func(f *faultFlow) bool { return f.okByPhase[2] >= 20 })
	flow.mu.Lock()
	t.Logf("Publisher: first success %v after the restart", flow.firstOK[2].Sub(restartedAt))
	flow.mu.Unlock()
	for _, c := range all {
		c.waitUntil(t, "received after the restart", func(c *faultConsumer) bool { return c.total >= 100 })
	}
	flow.halt(t)
	published := faultPublishMarkers(t, pub, flow.published, topics...)
	for c, covered := range consumers {
		c.waitMarkers(t, covered...)
	}

	require.Empty(t, reconnects, "the reconnect hook fires once")
	stats := sub.Stats()
	require.EqualValues(t, 1, stats.Reconnects)
	require.Zero(t, stats.Dropped)
	require.Zero(t, stats.DecodeFailures)
	missing := faultCheckGaps(t, sub, &gaps, published, consumers)

	// Every message the Publisher did not send was reported to its caller.
	require.NoError(t, pub.Close())
	flow.mu.Lock()
	defer flow.mu.Unlock()
	ps := pub.Stats()
	markers := uint64(len(topics))
	attempted := uint64(flow.ok+flow.fail) + 3 + markers
	t.Logf("Publisher: %d calls ok, %d failed, worst return past a deadline %v; stats %+v; gaps %d",
		flow.ok, flow.fail, flow.overshoot, ps, missing)
	require.Equal(t, attempted, ps.Published+ps.Failed, "every message is counted once, sent or failed")
	require.LessOrEqual(t, ps.Failed, uint64(flow.fail)+3, "every failed message was reported to its caller")
	require.LessOrEqual(t, flow.overshoot, faultSlack, "Publish never returns much past its message's deadline")
}

// faultProbe publishes unstamped JSON envelopes, as a TypeScript peer does,
// on every topic each interval, from a client of its own, until the
// returned func is called.
func faultProbe(t testing.TB, addr string, topics []string, interval time.Duration) (stop func()) {
	client := faultClient(t, addr, nil)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			for _, topic := range topics {
				body := fmt.Sprintf(`{"type":%q,"payload":{"probe":true}}`, topic)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = client.Publish(ctx, topic, body).Err() // fails while the server is down
				cancel()
			}
			select {
			case <-done:
				return
			case <-ticker.C:
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			<-stopped
		})
	}
	t.Cleanup(stop)
	return stop
}

// Publisher-side faults with go-redis's default options (retries included):
// Publish to a killed server returns an error by its message's deadline,
// and works again after the restart.
func TestFaultPublisherKilledServer(t *testing.T) {
	srv := redistest.Start(t)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, newFaultLog(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	require.NoError(t, pub.Publish("fault.pub", faultMessage(faultPayload{})))

	srv.Kill()
	const deadline = 300 * time.Millisecond
	const calls = 5
	for i := range calls {
		msg := faultMessage(faultPayload{N: i})
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		msg.SetContext(ctx)
		end, _ := ctx.Deadline()
		err := pub.Publish("fault.pub", msg)
		late := time.Since(end)
		cancel()
		require.Error(t, err, "Publish to a killed server")
		require.LessOrEqual(t, late, faultSlack, "Publish returned %v past its message's deadline", late)
		t.Logf("Publish %d to the killed server: %v (returned %v past the deadline)", i, err, late)
	}

	srv.Restart()
	restarted := time.Now()
	attempts := 0
	for {
		attempts++
		msg := faultMessage(faultPayload{N: calls + attempts})
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		msg.SetContext(ctx)
		err := pub.Publish("fault.pub", msg)
		cancel()
		if err == nil {
			break
		}
		require.Less(t, time.Since(restarted), testutil.Timeout, "Publisher does not recover: %v", err)
	}
	t.Logf("Publisher recovered %v after the restart, at attempt %d", time.Since(restarted), attempts)
	require.NoError(t, pub.Publish("fault.pub", faultMessage(faultPayload{})), "and keeps working")

	require.NoError(t, pub.Close())
	ps := pub.Stats()
	total := uint64(1 + calls + attempts + 1)
	require.Equal(t, total, ps.Published+ps.Failed)
	require.LessOrEqual(t, ps.Failed, uint64(calls+attempts-1), "every failed message was reported to its caller")
	require.ErrorIs(t, pub.Publish("fault.pub", faultMessage(faultPayload{})), redispubsub.ErrPublisherClosed)
}

// CLIENT KILL TYPE pubsub while 10,000 messages flow on four topics, also
// read through a pattern: the gap count is exactly the number of messages
// published minus the number received, per subscription and in total.
func TestFaultClientKillGapsExact(t *testing.T) {
	topics := []string{"fault.kill.a", "fault.kill.b", "fault.kill.c", "fault.kill.d"}
	const pattern = "fault.kill.*"
	const total = 10_000

	srv := redistest.Start(t)
	log := newFaultLog(t)
	var gaps faultGaps
	reconnected := make(chan redispubsub.ReconnectEvent, 16)
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{
		Client:      faultClient(t, srv.Addr(), nil),
		OnGap:       gaps.record,
		OnReconnect: func(ev redispubsub.ReconnectEvent) { reconnected <- ev },
	}, log)

	consumers := make(map[*faultConsumer][]string)
	for _, topic := range topics {
		ch, _ := testutil.Subscribe(t, sub, topic)
		consumers[newFaultConsumer(topic, topic, ch)] = []string{topic}
	}
	consumers[faultPatternConsumer(t, sub, pattern)] = topics

	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: faultClient(t, srv.Addr(), nil)}, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	// The flow publishes batches of 10, round-robin, and waits at the
	// halfway mark until the kill happened, so that messages flow both
	// before and after it.
	killed := make(chan struct{})
	var next [4]int
	flowDone := make(chan error, 1)
	go func() {
		flowDone <- func() error {
			for i := 0; i < total/10; i++ {
				if i == total/20 {
					select {
					case <-killed:
					case <-time.After(testutil.Timeout):
						return errors.New("no kill")
					}
				}
				k := i % len(topics)
				msgs := make([]*message.Message, 10)
				for j := range msgs {
					msgs[j] = faultMessage(faultPayload{N: next[k]})
					next[k]++
				}
				if err := pub.Publish(topics[k], msgs...); err != nil {
					return err
				}
			}
			return nil
		}()
	}()
	testutil.Eventually(t, func() bool { return sub.Stats().Received >= total/5 }, "20% received")
	require.EqualValues(t, 1, srv.KillClients(t, "TYPE", "pubsub"))
	receivedAtKill := sub.Stats().Received
	close(killed)
	require.NoError(t, testutil.Wait(t, flowDone, "the flow"))
	ev := testutil.Wait(t, reconnected, "the reconnect event")
	t.Logf("reconnect event: %+v", ev)
	require.Equal(t, len(topics), ev.Topics)
	require.Equal(t, 1, ev.Patterns)
	published := faultPublishMarkers(t, pub, func(topic string) int {
		for k, tp := range topics {
			if tp == topic {
				return next[k]
			}
		}
		panic(topic)
	}, topics...)
	for c, covered := range consumers {
		c.waitMarkers(t, covered...)
	}

	stats := sub.Stats()
	require.Zero(t, stats.Dropped)
	require.Zero(t, stats.DecodeFailures)
	require.EqualValues(t, 1, stats.Reconnects)
	missing := faultCheckGaps(t, sub, &gaps, published, consumers)
	// Counted without the consumers: what Redis delivered, plus what it
	// lost, is what was published (once per topic, once per pattern).
	require.EqualValues(t, 2*(total+len(topics)), stats.Received+stats.Gaps)
	t.Logf("published %d (+%d markers) on %d topics and a pattern; received %d bodies (%d at the kill); gaps %d (= missing %d)",
		total, len(topics), len(topics), stats.Received, receivedAtKill, stats.Gaps, missing)
}

// A connection that stops answering without closing (a blackholing proxy):
// the Subscriber notices it within its health-check interval (plus the
// granularity of its watchdog, which ticks every half interval, plus
// slack), keeps trying while the network is silent, and reconnects once new
// connections go through again; the reconnect hook reports the cause.
//
// Subscriber client: faultClient with ReadTimeout and WriteTimeout 1s,
// which bound go-redis's connection handshake (HELLO) on a blackholed
// connection; by default (3s) each attempt during the blackhole takes ~5s.
func TestFaultBlackholeHealthCheck(t *testing.T) {
	const hc = 500 * time.Millisecond
	const topic, pattern = "fault.bh.t", "fault.bh.*"
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	log := newFaultLog(t)
	var gaps faultGaps
	reconnects := make(chan redispubsub.ReconnectEvent, 16)
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{
		Client: faultClient(t, proxy.Addr(), func(o *redis.Options) {
			o.ReadTimeout, o.WriteTimeout = time.Second, time.Second
		}),
		HealthCheckInterval: hc,
		OnGap:               gaps.record,
		OnReconnect:         func(ev redispubsub.ReconnectEvent) { reconnects <- ev },
	}, log)
	ch, _ := testutil.Subscribe(t, sub, topic)
	tc := newFaultConsumer(topic, topic, ch)
	pc := faultPatternConsumer(t, sub, pattern)

	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: faultClient(t, srv.Addr(), nil)}, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	flow := startFaultFlow(t, pub, []string{topic}, time.Second, 5*time.Millisecond)
	for _, c := range []*faultConsumer{tc, pc} {
		c.waitUntil(t, "received 20 messages", func(c *faultConsumer) bool { return c.total >= 20 })
	}

	blackholed := time.Now()
	proxy.Blackhole()
	lost, i := log.waitError(t, 0, testutil.Timeout, "of the lost connection", func(e faultLogEntry) bool {
		return strings.Contains(e.msg, "connection lost")
	})
	noticed := lost.at.Sub(blackholed)
	t.Logf("silent connection noticed after %v (HealthCheckInterval %v): %v", noticed, hc, lost.err)
	require.ErrorContains(t, lost.err, "PING")
	require.LessOrEqual(t, noticed, hc+hc/2+faultSlack, "noticed within the health-check interval")

	// While the network stays silent, connection attempts fail (go-redis's
	// handshake gets no answer) and nothing is reported as reconnected.
	failed, _ := log.waitError(t, i+1, testutil.Timeout, "of a failed attempt", func(e faultLogEntry) bool {
		return strings.Contains(e.msg, "Cannot connect")
	})
	t.Logf("attempt during the blackhole failed after %v: %v", failed.at.Sub(lost.at), failed.err)
	require.Empty(t, reconnects, "no reconnect reported while the network is silent")
	require.Zero(t, sub.Stats().Reconnects)

	proxy.Resume()
	resumed := time.Now()
	flow.phase.Store(2)
	arrivals := []<-chan time.Time{
		tc.firstWhere(func(p faultPayload) bool { return p.Phase >= 2 }),
		pc.firstWhere(func(p faultPayload) bool { return p.Phase >= 2 }),
	}
	ev := testutil.Wait(t, reconnects, "a reconnect after Resume")
	t.Logf("reconnected %v after Resume: %+v", time.Since(resumed), ev)
	require.ErrorContains(t, ev.Cause, "PING", "the hook reports the cause")
	require.Equal(t, 1, ev.Topics)
	require.Equal(t, 1, ev.Patterns)
	for _, at := range arrivals {
		t.Logf("delivery resumed %v after Resume", testutil.Wait(t, at, "a delivery after Resume").Sub(resumed))
	}
	flow.halt(t)
	published := faultPublishMarkers(t, pub, flow.published, topic)
	tc.waitMarkers(t, topic)
	pc.waitMarkers(t, topic)
	require.Empty(t, reconnects, "the reconnect hook fires once")
	require.EqualValues(t, 1, sub.Stats().Reconnects)
	faultCheckGaps(t, sub, &gaps, published, map[*faultConsumer][]string{tc: {topic}, pc: {topic}})
}

// A stalled subscription and a healthy one on one Subscriber with the
// default configuration, while 1 GiB flows to the stalled one (128 MiB under
// -race or -short, where 1 GiB takes minutes) and every 16th message goes to
// the healthy one. Redis never disconnects the Subscriber (its pubsub
// output-buffer limit is set to 1 MB to make sure), the stalled subscription
// holds up to BufferBytes and loses the rest, counted under its topic, the
// healthy one loses nothing, and the heap stays bounded by the buffer.
func TestFaultStalledConsumerHeapBounded(t *testing.T) {
	const (
		size  = 64 << 10 // bytes of payload per message
		every = 16       // one message in every goes to the healthy topic
	)
	volume := int64(1 << 30)
	if testutil.Race || testing.Short() {
		volume = 128 << 20
	}
	if v := os.Getenv("FAULT_STALLED_BYTES"); v != "" {
		_, err := fmt.Sscan(v, &volume)
		require.NoError(t, err, "FAULT_STALLED_BYTES")
	}
	n := int(volume / size)

	srv := redistest.Start(t, "--client-output-buffer-limit", "pubsub 1mb 512kb 1")
	log := newFaultLog(t)
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{Client: faultClient(t, srv.Addr(), nil)}, log)
	_, _ = testutil.Subscribe(t, sub, "fault.stalled") // never read
	live, _ := testutil.Subscribe(t, sub, "fault.live")
	id := faultPubsubClientID(t, srv)
	var liveReceived atomic.Int64
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		for msg := range live {
			liveReceived.Add(1)
			msg.Ack()
		}
	}()

	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: faultClient(t, srv.Addr(), func(o *redis.Options) {
		o.ReadTimeout, o.WriteTimeout = 10*time.Second, 10*time.Second // a loaded machine
	})}, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	payload, err := json.Marshal(strings.Repeat("x", size-2))
	require.NoError(t, err)

	baseline := faultHeapInuse()
	heap := startFaultHeap(5 * time.Millisecond)
	start := time.Now()
	const publishers = 4
	testutil.Parallel(t, n, publishers, func(i int) error {
		topic := "fault.stalled"
		if i%every == 0 {
			topic = "fault.live"
		}
		return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), payload))
	})
	toLive := (n + every - 1) / every
	toStalled := n - toLive
	testutil.Eventually(t, func() bool { return sub.Stats().Received >= uint64(n) }, "every message read")
	testutil.Eventually(t, func() bool { return liveReceived.Load() >= int64(toLive) }, "every healthy message delivered")
	elapsed := time.Since(start)
	maxHeap := heap.halt()

	stats := sub.Stats()
	require.Zero(t, stats.Reconnects, "Redis disconnected the Subscriber")
	require.Equal(t, id, faultPubsubClientID(t, srv), "the Subscriber's connection is the same")
	logText, err := os.ReadFile(srv.LogPath())
	require.NoError(t, err)
	require.NotContains(t, string(logText), "output buffer limits", "Redis closed a client for its output buffer")
	require.EqualValues(t, toLive, liveReceived.Load(), "the healthy subscription loses nothing")
	require.Zero(t, stats.DroppedByTopic["fault.live"])
	require.Equal(t, stats.Dropped, stats.DroppedByTopic["fault.stalled"], "drops are counted under their topic")
	require.LessOrEqual(t, stats.BufferedBytes, int64(redispubsub.DefaultBufferBytes), "what is held stays within the buffer")
	if int64(toStalled)*size > 2*redispubsub.DefaultBufferBytes {
		// One message waits in the output channel, the buffer holds the
		// rest of what was not dropped.
		held := toStalled - 1 - int(stats.Dropped)
		require.Positive(t, stats.Dropped, "drops are counted")
		require.InDelta(t, redispubsub.DefaultBufferBytes/size, held, float64(redispubsub.DefaultBufferBytes/size)/10,
			"the buffer was used before anything was dropped")
	}
	require.Zero(t, stats.Gaps, "drops are not gaps")

	// HeapInuse counts garbage the collector has not reclaimed yet: with
	// GOGC=100 up to as much again as what is live.
	bound := baseline + 2*uint64(redispubsub.DefaultBufferBytes) + 32<<20
	t.Logf("%d MiB in %d messages of %d KiB in %v (%.0f MB/s); HeapInuse baseline %s, max %s over %d samples, bound %s; stats %+v",
		volume>>20, n, size>>10, elapsed.Round(time.Millisecond), float64(volume)/1e6/elapsed.Seconds(),
		faultMiB(baseline), faultMiB(maxHeap), heap.samples.Load(), faultMiB(bound), stats)
	require.Less(t, maxHeap, bound, "the heap stays bounded by the buffer")
}

// faultPubsubClientID returns the id of the one pubsub client of srv.
func faultPubsubClientID(t testing.TB, srv *redistest.Server) string {
	t.Helper()
	list := srv.Do(t, "CLIENT", "LIST", "TYPE", "pubsub").(string)
	lines := strings.Split(strings.TrimSpace(list), "\n")
	require.Len(t, lines, 1, "one pubsub client: %s", list)
	for _, field := range strings.Fields(lines[0]) {
		if id, ok := strings.CutPrefix(field, "id="); ok {
			return id
		}
	}
	t.Fatalf("no id in %q", lines[0])
	return ""
}

// 1,000 subscribe / cancel cycles from 20 goroutines on 6 topics and 2
// patterns while messages flow, in every way a subscription can end
// (cancelled untouched, after an Ack, with a message waiting for its Ack,
// after a Nack, and cancelled while Subscribe runs), then Close: no panic,
// no goroutine left, Redis holds no subscription, and the heap returns to
// its baseline.
func TestFaultSubscribeCancelCycles(t *testing.T) {
	const (
		goroutines = 20
		cycles     = 1000
	)
	topics := []string{"fault.cyc.a", "fault.cyc.b", "fault.cyc.c", "fault.cyc.d", "fault.cyc.e", "fault.cyc.f"}
	patterns := []string{"fault.cyc.*", "fault.cyc.[abc]"}

	srv := redistest.Start(t)
	leaks := goleak.IgnoreCurrent()
	subClient := redis.NewClient(faultClientOptions(srv.Addr()))
	pubClient := redis.NewClient(faultClientOptions(srv.Addr()))
	log := newFaultLog(t)
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{
		Client:          subClient,
		NackResendSleep: time.Millisecond,
	}, log)
	require.NoError(t, err)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: pubClient}, log)
	require.NoError(t, err)

	cycle := func(i int) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var (
			ch  <-chan *message.Message
			err error
		)
		way := i % 5
		if way == 4 {
			go cancel() // races with Subscribe
		}
		if i%3 == 0 {
			ch, err = sub.SubscribePattern(ctx, patterns[i%len(patterns)])
		} else {
			ch, err = sub.Subscribe(ctx, topics[i%len(topics)])
		}
		if err != nil {
			if way == 4 && errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("cycle %d: subscribe: %w", i, err)
		}
		if way >= 1 && way <= 3 {
			msg, err := testutil.TryReceive(ch)
			if err != nil {
				return fmt.Errorf("cycle %d: %w", i, err)
			}
			switch way {
			case 1:
				msg.Ack()
			case 3:
				msg.Nack()
			}
		}
		cancel()
		timeout := time.After(testutil.Timeout)
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return nil
				}
			case <-timeout:
				return fmt.Errorf("cycle %d: channel not closed after cancel", i)
			}
		}
	}
	runCycles := func(from, to int) {
		testutil.Parallel(t, to-from, goroutines, func(k int) error { return cycle(from + k) })
	}
	quiet := func() {
		testutil.Eventually(t, func() bool {
			for _, topic := range topics {
				if testutil.Numsub(t, srv, topic) != 0 {
					return false
				}
			}
			return srv.Do(t, "PUBSUB", "NUMPAT").(int64) == 0
		}, "Redis holds no subscription once every subscription ended")
	}

	// Warm up, then take the baseline with nothing subscribed.
	warm := startFaultFlow(t, pub, topics, testutil.Timeout, time.Millisecond)
	runCycles(0, 50)
	warm.halt(t)
	quiet()
	baseline := faultHeapInuse()
	goroutinesBefore := runtime.NumGoroutine()

	flow := startFaultFlow(t, pub, topics, testutil.Timeout, 0)
	start := time.Now()
	runCycles(0, cycles)
	elapsed := time.Since(start)
	flow.halt(t)
	quiet()
	after := faultHeapInuse()
	stats := sub.Stats()
	t.Logf("%d cycles in %v while %d messages were published; HeapInuse baseline %s, after %s (%+d KiB); goroutines %d before, %d after; stats %+v",
		cycles, elapsed.Round(time.Millisecond), flow.ok, faultMiB(baseline), faultMiB(after),
		(int64(after)-int64(baseline))>>10, goroutinesBefore, runtime.NumGoroutine(), stats)
	require.Zero(t, flow.fail)
	require.Zero(t, stats.Reconnects)
	require.Zero(t, stats.Gaps, "no connection lost, no gap")
	require.LessOrEqual(t, after, baseline+2<<20, "the heap returns to its baseline")
	testutil.GoroutinesAtMost(t, goroutinesBefore) // back to the goroutines before the cycles

	require.NoError(t, sub.Close())
	require.NoError(t, pub.Close())
	require.NoError(t, subClient.Close())
	require.NoError(t, pubClient.Close())
	goleak.VerifyNone(t, leaks)
}

// Bodies of the wrong shape published raw, as a buggy TypeScript peer
// might, are counted in DecodeFailures and skipped, and the subscriptions
// go on; bodies of a TypeScript peer, which carry no sequence stamps, are
// delivered and never counted as gaps, also when a Go Publisher's stamped
// messages are interleaved with them.
func TestFaultMalformedAndUnstampedBodies(t *testing.T) {
	const topic, pattern = "fault.body", "fault.bod*"
	srv := redistest.Start(t)
	log := newFaultLog(t)
	var gaps faultGaps
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{
		Client: faultClient(t, srv.Addr(), nil),
		OnGap:  gaps.record,
	}, log)
	ch, _ := testutil.Subscribe(t, sub, topic)
	tc := newFaultConsumer(topic, topic, ch)
	pc := faultPatternConsumer(t, sub, pattern)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: faultClient(t, srv.Addr(), nil)}, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	raw := faultClient(t, srv.Addr(), nil)

	bad := []string{
		`{"type":"fault.body","payload":{"probe":true},"metadata":{"a":1}}`,
		`{"type":"fault.body","payload":{"probe":true},"metadata":{"a":null}}`,
		`{"type":"fault.body","payload":{"probe":true},"metadata":"a"}`,
		`{"type":"fault.body","payload":{"probe":true},"metadata":[]}`,
		`{"type":"fault.body","payload":{"probe":true},"uuid":5}`,
		`{"uuid":{"a":"b"}}`,
		`[{"type":"fault.body","payload":{}}]`,
		`[]`,
		`42`,
		`-1.5e3`,
		`"fault.body"`,
		`true`,
		`{"type":"fault.body","payload":{"probe":true}`,
		`{"type":"fault.body","payl`,
		`{"type":"fault.body","payload":{"probe":tru}}`,
		`{"type":"fault.body"}}`,
		`{"type":"fault.body","payload":{"probe":true}} {}`,
		`undefined`,
		`not json`,
		"{\"type\":\"fault.body\",\"payload\":\"\xff\xfe\"}",
		// A stamped body, but broken: counted as a decode failure only. Its
		// %d is the round plus one: a stream of its own without gaps (a
		// number seen before would be dropped as a duplicate, undecoded).
		`{"type":"fault.body","payload":{"n":3},"metadata":{"rps_pub":"x","rps_seq":"%d","a":1}}`,
	}
	// What a TypeScript peer sends: every one is delivered.
	good := []string{
		`{"type":"fault.body","payload":{"probe":true}}`,
		`{"type":"something.else","id":"42","payload":{"probe":true}}`,
		`{"payload":{"probe":true}}`,
		`{"payload":{"probe":true},"unknown":[1,{"x":null}],"metadata":null,"uuid":null}`,
		`{"type":"fault.body","payload":{"probe":true},"uuid":"ts-uuid","metadata":{"k":"v"}}`,
		`{"type":"fault.body","payload":{"probe":true},"metadata":{"rps_pub":"ts-peer"}}`,
		`{"type":"fault.body","payload":{"probe":true},"metadata":{"rps_seq":"7"}}`,
		`{"type":"fault.body","payload":{"probe":true},"metadata":{"rps_pub":"ts-peer","rps_seq":"not a number"}}`,
		` { "payload" : { "probe" : true } } `,
	}

	// Rounds of: one stamped message from the Go Publisher, then every bad
	// and good body from the raw client, in a shuffled order.
	const rounds = 20
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	for r := range rounds {
		require.NoError(t, pub.Publish(topic, faultMessage(faultPayload{N: r})))
		bodies := append(append([]string(nil), bad...), good...)
		for i, body := range bodies {
			if strings.Contains(body, "%d") {
				bodies[i] = fmt.Sprintf(body, r+1)
			}
		}
		rng.Shuffle(len(bodies), func(i, j int) { bodies[i], bodies[j] = bodies[j], bodies[i] })
		for _, body := range bodies {
			require.NoError(t, raw.Publish(ctx, topic, body).Err())
		}
	}
	published := faultPublishMarkers(t, pub, func(string) int { return rounds }, topic)
	tc.waitMarkers(t, topic)
	pc.waitMarkers(t, topic)

	stats := sub.Stats()
	// Each body reaches the Subscriber twice: as a message of the topic
	// and as a message of the pattern; each is decoded once.
	require.EqualValues(t, 2*rounds*len(bad), stats.DecodeFailures, "every malformed body is counted")
	require.Zero(t, stats.Gaps, "unstamped bodies are never gaps")
	require.Zero(t, stats.Duplicates)
	require.Empty(t, gaps.events)
	for _, c := range []*faultConsumer{tc, pc} {
		c.mu.Lock()
		assert.Equal(t, rounds*len(good), c.probes, "%s: every TypeScript body delivered", c.name)
		assert.Empty(t, c.bad, "%s: nothing malformed delivered", c.name)
		c.mu.Unlock()
		missing, dups := c.missing(topic, published[topic])
		assert.Empty(t, missing, c.name)
		assert.Zero(t, dups, c.name)
	}
	t.Logf("stats %+v", stats)
}

// A topic unsubscribed (its last subscription ended) and subscribed again
// before Redis confirmed the UNSUBSCRIBE: the messages published while
// nobody was subscribed are not gaps (Stats().Gaps, OnGap), since no
// connection was lost. (The bug: the topic kept its sequence tracker.)
func TestFaultNoGapsAfterQuickResubscribe(t *testing.T) {
	const topic = "fault.resub"
	srv := redistest.Start(t)
	log := newFaultLog(t)
	var gaps faultGaps
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{
		Client: faultClient(t, srv.Addr(), nil),
		OnGap:  gaps.record,
	}, log)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: faultClient(t, srv.Addr(), nil)}, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	flow := startFaultFlow(t, pub, []string{topic}, testutil.Timeout, 0)

	for i := range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := sub.Subscribe(ctx, topic)
		require.NoError(t, err)
		msg := testutil.Receive(t, ch)
		msg.Ack()
		cancel()
		testutil.RequireClosed(t, ch)
		if sub.Stats().Gaps > 0 {
			t.Logf("gap after %d cycles", i+1)
			break
		}
	}
	flow.halt(t)
	t.Logf("stats %+v, gap events %+v", sub.Stats(), gaps.events)
	require.Zero(t, sub.Stats().Reconnects)
	require.Zero(t, sub.Stats().Gaps, "no message was lost while subscribed")
}

// A pooled connection goes silent while a pipeline is on it: with
// Options.ContextTimeoutEnabled (as PublisherConfig.Client says), the
// Publisher's writer gives up on it when its messages' contexts end, so a
// later Publish goes out on a new connection. (The bug: every pipeline ran
// with context.Background(), which held the one writer for the client's
// ReadTimeout, 3s, and failed every Publish queued behind it.)
func TestFaultPublisherNotStuckOnSilentConnection(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	client := faultClient(t, proxy.Addr(), func(o *redis.Options) {
		o.ContextTimeoutEnabled = true // as PublisherConfig.Client says
	})
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client}, newFaultLog(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	require.NoError(t, pub.Publish("fault.silent", faultMessage(faultPayload{})))

	proxy.Blackhole()
	publish := func(d time.Duration) error {
		msg := faultMessage(faultPayload{})
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		msg.SetContext(ctx)
		return pub.Publish("fault.silent", msg)
	}
	start := time.Now()
	require.Error(t, publish(200*time.Millisecond))
	t.Logf("first Publish returned after %v", time.Since(start))
	proxy.Resume() // new connections work; the pooled one stays silent
	start = time.Now()
	err = publish(time.Second)
	t.Logf("second Publish returned after %v: %v", time.Since(start), err)
	require.NoError(t, err, "a message whose context allows 1s is sent on a new connection")
}

// A new connection goes silent right after the Subscriber sent its
// SUBSCRIBE: since Redis never confirmed the resubscription, nothing is
// reported (OnReconnect) or counted (Stats().Reconnects) as a reconnect, and
// the health check drops the connection. (A regression test: an earlier
// version reported and counted the reconnect as soon as the SUBSCRIBE was
// written; TestOnReconnectAfterResubscriptionConfirmed shows the same
// guarantee with an ACL.)
func TestFaultNoReconnectReportedOnSilentConnection(t *testing.T) {
	const topic = "fault.mute"
	srv := redistest.Start(t)
	var armed atomic.Bool
	log := newFaultLog(t)
	reconnects := make(chan redispubsub.ReconnectEvent, 16)
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{
		Client: faultClient(t, srv.Addr(), func(o *redis.Options) {
			o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &faultMuteConn{Conn: c, arm: armed.Load()}, nil
			}
		}),
		HealthCheckInterval: 500 * time.Millisecond,
		OnReconnect:         func(ev redispubsub.ReconnectEvent) { reconnects <- ev },
	}, log)
	_, _ = testutil.Subscribe(t, sub, topic)

	// The next connection goes silent as soon as it sent SUBSCRIBE: Redis's
	// confirmation never reaches the Subscriber.
	armed.Store(true)
	require.EqualValues(t, 1, srv.KillClients(t, "TYPE", "pubsub"))
	_, i := log.waitError(t, 0, testutil.Timeout, "of the killed connection", func(e faultLogEntry) bool {
		return strings.Contains(e.msg, "connection lost")
	})
	// Dropped by the health check, whether the Subscriber logs that as a
	// lost connection or a failed attempt.
	dead, _ := log.waitError(t, i+1, testutil.Timeout, "of the silent connection", func(e faultLogEntry) bool {
		return e.err != nil && strings.Contains(e.err.Error(), "PING")
	})
	t.Logf("silent connection dropped: %s: %v", dead.msg, dead.err)
	select {
	case ev := <-reconnects:
		t.Fatalf("reconnect reported for a connection whose SUBSCRIBE Redis never confirmed: %+v", ev)
	default:
	}
	require.Zero(t, sub.Stats().Reconnects)
}

// faultMuteConn is a connection that, when arm is set, goes silent once the
// client sent a (P)SUBSCRIBE: what the server sends from then on is read
// and discarded.
type faultMuteConn struct {
	net.Conn
	arm   bool
	muted atomic.Bool
}

func (c *faultMuteConn) Write(p []byte) (int, error) {
	if c.arm && bytes.Contains(bytes.ToLower(p), []byte("subscribe")) {
		c.muted.Store(true)
	}
	return c.Conn.Write(p)
}

func (c *faultMuteConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if err != nil || !c.muted.Load() {
			return n, err
		}
	}
}

// With go-redis's default MaxRetries (3), a Publisher pipeline whose
// connection breaks after Redis ran it is sent again: the Subscriber drops
// the second copies, which their sequence stamps reveal, and counts them in
// Stats().Duplicates. (The bug: it delivered them.) The Publisher's
// connection here loses Redis's replies to a PUBLISH pipeline and then
// closes, as a connection reset would.
func TestFaultRetriedPipelineDuplicatesDropped(t *testing.T) {
	faultRetriedPipeline(t, 1)
}

// The same when the retried pipeline carries the first message of its
// stream (sequence number 1: the first Publish of a Publisher on a channel):
// the second copies are dropped and counted too, since a number not above
// the last one seen from a publisher is a duplicate, 1 included. A Publisher
// never numbers a channel from 1 again under the same id: one that forgets
// its channels takes a new publisher id. (A regression test: an earlier
// Subscriber took a second message 1 for a Publisher that restarted its
// numbering and delivered the whole batch twice, with Stats().Duplicates 0.)
func TestFaultRetriedFirstPipelineDuplicatesDropped(t *testing.T) {
	faultRetriedPipeline(t, 0)
}

// faultRetriedPipeline publishes before messages normally, then 100 in one
// Publish whose first pipeline loses its replies and is retried, and checks
// that every message is delivered once.
func faultRetriedPipeline(t *testing.T, before int) {
	const topic, n = "fault.dup", 100
	srv := redistest.Start(t)
	log := newFaultLog(t)
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{Client: faultClient(t, srv.Addr(), nil)}, log)
	ch, _ := testutil.Subscribe(t, sub, topic)
	c := newFaultConsumer(topic, topic, ch)

	var armed atomic.Bool
	client := faultClient(t, srv.Addr(), func(o *redis.Options) {
		o.MaxRetries = 3 // go-redis's default
		o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &faultLoseRepliesConn{Conn: conn, arm: &armed}, nil
		}
	})
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client}, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	for i := range before {
		require.NoError(t, pub.Publish(topic, faultMessage(faultPayload{N: i})))
	}
	armed.Store(true)
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = faultMessage(faultPayload{N: before + i})
	}
	require.NoError(t, pub.Publish(topic, msgs...), "the retried pipeline succeeds")
	require.False(t, armed.Load(), "the pipeline went through the losing connection")
	published := faultPublishMarkers(t, pub, func(string) int { return before + n }, topic)
	c.waitMarkers(t, topic)

	missing, dups := c.missing(topic, published[topic])
	stats := sub.Stats()
	t.Logf("published %d, missing %d, duplicates delivered %d; stats %+v", published[topic], len(missing), dups, stats)
	require.Zero(t, dups, "the Subscriber delivers a stamped message once")
	require.Empty(t, missing)
	require.NotZero(t, stats.Duplicates, "Redis ran the first pipeline: its messages came twice")
	require.EqualValues(t, published[topic]+int(stats.Duplicates), stats.Received)
	require.Zero(t, stats.Gaps)
}

// faultLoseRepliesConn, once its client wrote a PUBLISH while arm is set
// (arm is then cleared), discards the server's next answer and fails the
// read with EOF, closing the connection: Redis ran the commands, the client
// never learns it.
type faultLoseRepliesConn struct {
	net.Conn
	arm    *atomic.Bool
	losing atomic.Bool
}

func (c *faultLoseRepliesConn) Write(p []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(p), []byte("publish")) && c.arm.CompareAndSwap(true, false) {
		c.losing.Store(true)
	}
	return c.Conn.Write(p)
}

func (c *faultLoseRepliesConn) Read(p []byte) (int, error) {
	if !c.losing.Load() {
		return c.Conn.Read(p)
	}
	_, _ = c.Conn.Read(p) // Redis answered: it ran the commands
	_ = c.Conn.Close()
	return 0, io.EOF
}
