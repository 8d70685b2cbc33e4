package redispubsub

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// Unit tests of the liveness probe on the fake socket: the test plays
// Redis, and the Subscriber's probes go to probeRedis instead of Client.

// probeRedis stands for the path a probe takes through Redis: each probe
// published is recorded and, while deliver is set, written as a message on
// the socket the fake serves now (as Redis would deliver it).
type probeRedis struct {
	published chan string // the probe's body (its number)
	deliver   atomic.Bool
	conn      atomic.Pointer[fakeConn]
	proto     resp
	refuse    error // returned by every PUBLISH when set
}

// newProbedSubscriber returns a Subscriber on the fake socket with probes
// every interval through pr, and the logger its connection logs to.
func newProbedSubscriber(t *testing.T, interval time.Duration, configure func(*SubscriberConfig)) (*Subscriber, *fakeRedis, *probeRedis, *errorLog) {
	t.Helper()
	s, f := newFakeSubscriber(t, func(c *SubscriberConfig) {
		c.ProbeInterval = interval
		if configure != nil {
			configure(c)
		}
	})
	pr := &probeRedis{published: make(chan string, 100), proto: 3}
	pr.deliver.Store(true)
	s.probePublish = func(_ context.Context, channel, body string) error {
		if pr.refuse != nil {
			pr.published <- body
			return pr.refuse
		}
		if fc := pr.conn.Load(); fc != nil && pr.deliver.Load() {
			_, _ = fc.conn.Write([]byte(pr.proto.message(channel, body)))
		}
		pr.published <- body
		return nil
	}
	// Set before the connection's dial returns (accept receives from
	// it), so read by its goroutines after this write.
	logs := &errorLog{}
	s.conns[""].logger = logs
	return s, f, pr, logs
}

// acceptProbed accepts the next socket and confirms the probe channel's
// SUBSCRIBE, which the Subscriber sends first, alone.
func acceptProbed(t *testing.T, s *Subscriber, f *fakeRedis, pr *probeRedis, connection int) *fakeConn {
	t.Helper()
	fc := f.accept()
	channel := ProbeTopicPrefix + s.id + ":" + strconv.Itoa(connection)
	fc.expect("SUBSCRIBE", channel)
	pr.conn.Store(fc)
	fc.send(pr.proto.confirm("subscribe", channel, 1))
	return fc
}

// nextProbe waits for the next probe published.
func (pr *probeRedis) nextProbe(t *testing.T) string {
	t.Helper()
	select {
	case body := <-pr.published:
		return body
	case <-time.After(5 * time.Second):
		t.Fatal("no probe published")
		return ""
	}
}

// Probes that arrive keep the connection; the first that does not drops it
// as deaf, and the reconnect says so.
func TestProbe_ArrivalKeepsTheConnectionAMissingOneDropsIt(t *testing.T) {
	reconnected := make(chan ReconnectEvent, 1)
	disconnected := make(chan DisconnectEvent, 1)
	s, f, pr, _ := newProbedSubscriber(t, 100*time.Millisecond, func(c *SubscriberConfig) {
		c.OnReconnect = func(ev ReconnectEvent) { reconnected <- ev }
		c.OnDisconnect = func(ev DisconnectEvent) { disconnected <- ev }
	})
	fc := acceptProbed(t, s, f, pr, 1)
	p := pr.proto
	out := subscribeOn(t, s, fc, p, "a")
	// Each probe is published one interval after the previous one was
	// accepted, so only if it arrived: four in a row on one socket.
	for want := 1; want <= 4; want++ {
		require.Equal(t, strconv.Itoa(want), pr.nextProbe(t))
	}
	waitFor(t, func() bool { return s.Stats().ProbesReceived >= 4 })
	require.NoError(t, s.Health(context.Background()))

	pr.deliver.Store(false) // Redis accepts, the socket receives nothing
	fc.closed()
	select {
	case ev := <-disconnected:
		require.ErrorIs(t, ev.Cause, ErrConnectionDeaf)
		require.Equal(t, 1, ev.Topics)
	case <-time.After(5 * time.Second):
		t.Fatal("no OnDisconnect")
	}
	pr.deliver.Store(true)
	fc2 := f.accept()
	fc2.expect("SUBSCRIBE", "a", ProbeTopicPrefix+s.id+":1")
	pr.conn.Store(fc2)
	fc2.send(p.confirm("subscribe", "a", 1))
	fc2.send(p.confirm("subscribe", ProbeTopicPrefix+s.id+":1", 2))
	select {
	case ev := <-reconnected:
		require.ErrorIs(t, ev.Cause, ErrConnectionDeaf)
		require.Equal(t, 1, ev.Topics, "the probe channel is not a topic")
	case <-time.After(5 * time.Second):
		t.Fatal("no OnReconnect")
	}
	stats := s.Stats()
	require.EqualValues(t, 1, stats.DeafConnections)
	require.EqualValues(t, 1, stats.Reconnects)
	require.Zero(t, stats.Received, "probes are not messages")
	fc2.send(p.message("a", envelope("a", 1)))
	receive(t, out)
	// Close waits for the hooks: an OnDisconnect for it would be here.
	require.NoError(t, s.Close())
	require.Empty(t, disconnected, "Close is not a lost connection")
}

// Probe frames, of this connection's probe channel or of another
// Subscriber's reaching a pattern subscription, are never routed: not
// delivered, not counted as received.
func TestProbe_FramesAreNotRouted(t *testing.T) {
	s, f, pr, _ := newProbedSubscriber(t, time.Hour, nil)
	fc := acceptProbed(t, s, f, pr, 1)
	p := pr.proto
	pr.nextProbe(t) // the first probe, delivered
	done := make(chan subscribeResult, 1)
	go func() {
		out, err := s.SubscribePattern(context.Background(), "*")
		done <- subscribeResult{out, err}
	}()
	fc.expect("PSUBSCRIBE", "*")
	fc.send(p.confirm("psubscribe", "*", 2))
	out := subscribed(t, done)
	own := ProbeTopicPrefix + s.id + ":1"
	fc.send(p.pmessage("*", own, "1"))
	fc.send(p.message(own, "1"))                              // a duplicate of the first
	fc.send(p.pmessage("*", ProbeTopicPrefix+"other:1", "7")) // another Subscriber's
	fc.send(p.message(own, "not a number"))                   // ignored as well
	fc.send(p.pmessage("*", "orders", envelope("orders", 1))) // a message
	require.Equal(t, `{"n":1}`, string(receive(t, out).Payload))
	nothingQueued(t, out)
	stats := s.Stats()
	require.EqualValues(t, 1, stats.Received)
	require.EqualValues(t, 1, stats.ProbesReceived)
	require.EqualValues(t, 1, stats.ProbeRoundTrip.Count)

	_, err := s.Subscribe(context.Background(), ProbeTopicPrefix+s.id+":1")
	require.ErrorIs(t, err, ErrReservedTopic)
	_, err = s.SubscribePattern(context.Background(), ProbeTopicPrefix+"*")
	require.ErrorIs(t, err, ErrReservedTopic)
}

// An ACL that refuses the probe channel's SUBSCRIBE turns the probes of the
// Subscriber off, saying so once; the connection works as before, after a
// reconnect too, and counts as ready.
func TestProbe_RefusedSubscribeTurnsProbesOffOnce(t *testing.T) {
	s, f, pr, logs := newProbedSubscriber(t, 50*time.Millisecond, nil)
	fc := f.accept()
	p := pr.proto
	fc.expect("SUBSCRIBE", ProbeTopicPrefix+s.id+":1")
	fc.send("-NOPERM this user has no permissions to access one of the channels used as arguments\r\n")
	out := subscribeOn(t, s, fc, p, "a")
	require.NoError(t, s.Health(context.Background()))
	require.True(t, s.probes.off.Load(), "off for the whole Subscriber")
	_ = fc.conn.Close() // lost: the reconnect does not subscribe the probe again
	fc2 := f.accept()
	fc2.expect("SUBSCRIBE", "a")
	fc2.send(p.confirm("subscribe", "a", 1))
	fc2.send(p.message("a", envelope("a", 1)))
	receive(t, out)
	require.Empty(t, pr.published, "no probe published")
	require.Equal(t, 1, probeRefusals(logs))
}

// An ACL that refuses the probe's PUBLISH turns the probes of the
// Subscriber off in the same way.
func TestProbe_RefusedPublishTurnsProbesOffOnce(t *testing.T) {
	s, f, pr, logs := newProbedSubscriber(t, 50*time.Millisecond, nil)
	pr.refuse = redisError("NOPERM User u has no permissions to access the '" + ProbeTopicPrefix + "x' channel")
	fc := acceptProbed(t, s, f, pr, 1)
	pr.nextProbe(t)
	waitFor(t, func() bool { return probeRefusals(logs) == 1 })
	require.True(t, s.probes.off.Load(), "off for the whole Subscriber")
	require.NoError(t, s.Health(context.Background()))
	out := subscribeOn(t, s, fc, pr.proto, "a")
	_ = fc.conn.Close()
	fc2 := f.accept()
	fc2.expect("SUBSCRIBE", "a")
	fc2.send(pr.proto.confirm("subscribe", "a", 1))
	fc2.send(pr.proto.message("a", envelope("a", 1)))
	receive(t, out)
	require.Empty(t, pr.published, "one probe published, refused, and no other")
	require.Equal(t, 1, probeRefusals(logs))
}

func probeRefusals(logs *errorLog) int {
	logs.mu.Lock()
	defer logs.mu.Unlock()
	n := 0
	for _, msg := range logs.errors {
		if strings.Contains(msg, "refused the liveness probe") {
			n++
		}
	}
	return n
}

// errorLog keeps the messages logged at level Error. (Watermill's
// CaptureLoggerAdapter hands out its map unguarded.)
type errorLog struct {
	watermill.NopLogger
	mu     sync.Mutex
	errors []string
}

func (l *errorLog) Error(msg string, _ error, _ watermill.LogFields) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errors = append(l.errors, msg)
}

func (l *errorLog) With(watermill.LogFields) watermill.LoggerAdapter { return l }

// Health says not ready until the connection is live and its first probe
// arrived.
func TestProbe_HealthWaitsForTheFirstProbe(t *testing.T) {
	s, f, pr, _ := newProbedSubscriber(t, time.Hour, nil)
	require.ErrorIs(t, s.Health(context.Background()), ErrNotReady)
	pr.deliver.Store(false)
	fc := acceptProbed(t, s, f, pr, 1)
	body := pr.nextProbe(t)
	err := s.Health(context.Background())
	require.ErrorIs(t, err, ErrNotReady)
	require.ErrorContains(t, err, "no liveness probe received yet")
	fc.send(pr.proto.message(ProbeTopicPrefix+s.id+":1", body))
	waitFor(t, func() bool { return s.Health(context.Background()) == nil })
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Health(context.Background()), ErrSubscriberClosed)
}

// The default interval is the one the README states.
func TestProbe_DefaultIntervalIsTheREADMEs(t *testing.T) {
	config := SubscriberConfig{}
	config.setDefaults()
	require.Equal(t, DefaultProbeInterval, config.ProbeInterval)
	require.Equal(t, 5*time.Second, DefaultProbeInterval)
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `ProbeInterval` \\|.*\\b5s\\b.*$")
	require.True(t, row.Match(readme), "the README's SubscriberConfig table gives ProbeInterval's default as 5s")
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"})
	defer func() { _ = client.Close() }()
	require.NoError(t, SubscriberConfig{Client: client, ProbeInterval: -1}.Validate())
	require.ErrorIs(t, SubscriberConfig{Client: client, ProbeInterval: time.Millisecond}.Validate(), ErrInvalidConfig)
}

// The round-trip histogram's bounds come with each Stats, a copy: a caller
// that changes or extends them changes nothing of the Subscriber's.
func TestProbe_RoundTripBoundsAreACopy(t *testing.T) {
	var h histogram
	h.observe(3 * time.Millisecond)
	h.observe(time.Minute) // above the last bound: in Count only
	got := h.snapshot()
	require.Equal(t, probeBounds[:], got.Bounds)
	require.Len(t, got.Buckets, len(got.Bounds))
	require.EqualValues(t, 2, got.Count)
	require.Equal(t, []uint64{0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, got.Buckets)
	got.Bounds[0] = time.Hour
	got.Bounds = append(got.Bounds, 10*time.Second)
	h.observe(time.Millisecond)
	again := h.snapshot()
	require.Equal(t, time.Millisecond, again.Bounds[0])
	require.Len(t, again.Bounds, len(probeBounds))
	require.Equal(t, []uint64{1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, again.Buckets)
}

// Close cuts short a probe whose PUBLISH is under way and waits for it: once
// Close returned, the probe's context has ended and the PUBLISH returned,
// and (checked at cleanup) no goroutine is left.
func TestProbe_CloseEndsAProbeUnderWay(t *testing.T) {
	s, f, pr, _ := newProbedSubscriber(t, time.Hour, nil)
	publishing := make(chan struct{}, 10)
	var cut, returned atomic.Bool
	s.probePublish = func(ctx context.Context, _, _ string) error {
		publishing <- struct{}{}
		<-ctx.Done() // Redis does not answer
		cut.Store(true)
		defer returned.Store(true)
		return ctx.Err()
	}
	acceptProbed(t, s, f, pr, 1)
	testutil.Wait(t, publishing, "a probe")
	require.NoError(t, testutil.Close(t, s, "the Subscriber"))
	require.True(t, cut.Load(), "Close ended the probe's context")
	require.True(t, returned.Load(), "Close waited for the probe's PUBLISH")
	require.Zero(t, s.Stats().ProbesSent, "the probe cut short is not counted as sent")
}
