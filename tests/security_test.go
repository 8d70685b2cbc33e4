package tests

// Least privilege, TLS, secrets and faults that stay local (issue 10), each
// on a real redis-server: an ACL user limited to its prefix runs the whole
// adapter; a channel the ACL refuses fails its own Subscribe at once and
// nothing else; TLS and mutual TLS work and fail clearly; no password
// reaches a log line, an error or an example's output; a socket that takes
// no more bytes does not stall Subscribe or Close. Helpers of this file
// start with "sec".

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// secPrefix is the ChannelPrefix of the ACL user's service.
const secPrefix = "myapp:events:"

// secACLRules are the README's least privilege of a service whose channels
// start with secPrefix.
var secACLRules = []string{"resetchannels", "&" + secPrefix + "*",
	"+publish", "+subscribe", "+psubscribe", "+ssubscribe", "+spublish",
	"+unsubscribe", "+punsubscribe", "+sunsubscribe", "+ping"}

// secAppClient creates the user "app" with secACLRules on srv and returns a
// client logged in as it, closed at the end of the test.
func secAppClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	srv.CreateUser(t, "app", "pw", secACLRules...)
	return faultClient(t, srv.Addr(), func(o *redis.Options) { o.Username, o.Password = "app", "pw" })
}

// secPublisher returns a Publisher on client, closed at the end of the test.
func secPublisher(t *testing.T, client redis.UniversalClient, prefix string, logger watermill.LoggerAdapter) *redispubsub.Publisher {
	t.Helper()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: prefix}, logger)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// secSubscriber returns a Subscriber of config, closed at the end of the
// test.
func secSubscriber(t *testing.T, config redispubsub.SubscriberConfig, logger watermill.LoggerAdapter) *redispubsub.Subscriber {
	t.Helper()
	sub, err := redispubsub.NewSubscriber(config, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	return sub
}

// secErrorLogs returns the messages of the Error logs log recorded.
func secErrorLogs(log *faultLog) []string {
	s := log.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	msgs := make([]string, len(s.entries))
	for i, e := range s.entries {
		msgs[i] = fmt.Sprintf("%s: %v", e.msg, e.err)
	}
	return msgs
}

// secCtx returns a context that bounds a Subscribe expected to return at
// once, so that a failing test does not wait for SubscribeTimeout.
func secCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// secSubscribePattern is wmSubscribe for a pattern.
func secSubscribePattern(t *testing.T, sub *redispubsub.Subscriber, pattern string) (<-chan *message.Message, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.SubscribePattern(ctx, pattern)
	require.NoError(t, err)
	return ch, cancel
}

// secRequireRefused checks that err is the refusal of a subscription that
// Redis answered at once: ErrSubscriptionRefused, not a timeout, naming what
// was refused and Redis's words.
func secRequireRefused(t *testing.T, err error, what string) {
	t.Helper()
	require.ErrorIs(t, err, redispubsub.ErrSubscriptionRefused)
	require.NotErrorIs(t, err, redispubsub.ErrSubscribeTimeout)
	require.ErrorContains(t, err, what)
	require.ErrorContains(t, err, "NOPERM")
}

// secPublishReceive publishes one message on topic and receives it on every
// channel of chs.
func secPublishReceive(t *testing.T, pub message.Publisher, topic string, chs ...<-chan *message.Message) {
	t.Helper()
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"topic":"`+topic+`"}`))
	require.NoError(t, pub.Publish(topic, msg))
	for _, ch := range chs {
		got := testutil.Receive(t, ch)
		require.Equal(t, msg.UUID, got.UUID)
		got.Ack()
	}
}

type secEvent struct {
	Status string `json:"status"`
}

// A user limited to its prefix's channels by the README's ACL line runs the
// Publisher, the Subscriber (Subscribe, a second Subscribe of the same
// topic, which joins with a PING, SubscribePattern, unsubscribing) and the
// EventTarget, and nothing is logged as an error.
func TestACLLeastPrivilegeRunsPublisherSubscriberAndEventTarget(t *testing.T) {
	srv := redistest.Start(t)
	log := newFaultLog(t)
	pub := secPublisher(t, secAppClient(t, srv), secPrefix, log)
	sub := secSubscriber(t, redispubsub.SubscriberConfig{
		Client: secAppClient(t, srv), ChannelPrefix: secPrefix, SubscribeTimeout: time.Minute,
	}, log)

	orders, cancelOrders := testutil.Subscribe(t, sub, "orders")
	joined, cancelJoined := testutil.Subscribe(t, sub, "orders")
	// Redis compares a PSUBSCRIBE's pattern with the ACL's literally: "*"
	// (Redis's "myapp:events:*") is the one pattern this user may use.
	all, cancelAll := secSubscribePattern(t, sub, "*")
	secPublishReceive(t, pub, "orders", orders, joined)
	msg := testutil.Receive(t, all)
	require.Equal(t, "orders", msg.Metadata.Get(redispubsub.MetadataTopic))
	msg.Ack()

	ctx := secCtx(t)
	target, err := redispubsub.NewEventTarget[secEvent](pub, sub, redispubsub.WithLogger(log))
	require.NoError(t, err)
	got := make(chan redispubsub.Event[secEvent], 1)
	_, err = target.AddEventListener(ctx, "call.responded:uuid-1", func(_ context.Context, ev redispubsub.Event[secEvent]) {
		got <- ev
	})
	require.NoError(t, err)
	require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[secEvent]{
		Type: "call.responded", ID: "uuid-1", Payload: secEvent{Status: "ok"},
	}))
	ev := testutil.Wait(t, got, "the event")
	require.Equal(t, "uuid-1", ev.ID)
	require.Equal(t, "ok", ev.Payload.Status)
	msg = testutil.Receive(t, all)
	require.Equal(t, "call.responded:uuid-1", msg.Metadata.Get(redispubsub.MetadataTopic))
	msg.Ack()

	require.NoError(t, target.Close())
	cancelJoined()
	testutil.RequireClosed(t, joined)
	cancelOrders()
	testutil.RequireClosed(t, orders)
	cancelAll()
	testutil.RequireClosed(t, all)
	testutil.Eventually(t, func() bool {
		return testutil.Numsub(t, srv, secPrefix+"orders") == 0 && testutil.Numsub(t, srv, secPrefix+"call.responded:uuid-1") == 0 &&
			srv.Do(t, "PUBSUB", "NUMPAT").(int64) == 0
	}, "unsubscribed from everything")
	require.Empty(t, secErrorLogs(log))
	require.Zero(t, sub.Stats().Reconnects)
}

// A Subscribe of a channel the ACL refuses fails at once (SubscribeTimeout
// is a minute) with ErrSubscriptionRefused, the channel and Redis's NOPERM,
// and so does a refused SubscribePattern; the Subscriber's other topic
// keeps flowing, without a reconnect. Concurrent Subscribes, half of them
// refused, each get their own answer.
func TestACLRefusedSubscribeFailsAtOnceAndAlone(t *testing.T) {
	srv := redistest.Start(t)
	log := newFaultLog(t)
	client := secAppClient(t, srv)
	pub := secPublisher(t, client, "", log)
	sub := secSubscriber(t, redispubsub.SubscriberConfig{Client: client, SubscribeTimeout: time.Minute}, log)
	ok, _ := testutil.Subscribe(t, sub, secPrefix+"ok")

	ctx := secCtx(t)
	_, err := sub.Subscribe(ctx, "other:x")
	secRequireRefused(t, err, `"other:x"`)
	secPublishReceive(t, pub, secPrefix+"ok", ok)
	_, err = sub.SubscribePattern(ctx, "other:*")
	secRequireRefused(t, err, `"other:*"`)
	// A pattern narrower than the ACL's is refused too: Redis compares
	// patterns literally.
	_, err = sub.SubscribePattern(ctx, secPrefix+"call.*")
	secRequireRefused(t, err, `"`+secPrefix+`call.*"`)
	secPublishReceive(t, pub, secPrefix+"ok", ok)

	const n = 40
	type result struct {
		ch  <-chan *message.Message
		err error
	}
	results := make([]result, n)
	topic := func(i int) string {
		if i%2 == 0 {
			return fmt.Sprintf("%sc.%d", secPrefix, i)
		}
		return fmt.Sprintf("other:c.%d", i)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, err := sub.Subscribe(ctx, topic(i))
			results[i] = result{ch, err}
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	testutil.Wait(t, done, "the concurrent Subscribes")
	for i, r := range results {
		if i%2 == 1 {
			secRequireRefused(t, r.err, fmt.Sprintf("%q", topic(i)))
			continue
		}
		require.NoError(t, r.err, topic(i))
		secPublishReceive(t, pub, topic(i), r.ch)
	}
	secPublishReceive(t, pub, secPrefix+"ok", ok)
	require.Zero(t, sub.Stats().Reconnects)
}

// Under the README's ACL line the liveness probes run (their channels are
// under the prefix); under an ACL that refuses the probe channel, the
// Subscriber logs one clear error naming the pattern to allow, goes without
// probes, and works as before: Subscribe, delivery, Health.
func TestACLRefusedProbeChannelTurnsProbesOffOnce(t *testing.T) {
	srv := redistest.Start(t)
	allowed := secSubscriber(t, redispubsub.SubscriberConfig{
		Client: secAppClient(t, srv), ChannelPrefix: secPrefix, ProbeInterval: 50 * time.Millisecond,
	}, newFaultLog(t))
	testutil.Eventually(t, func() bool { return allowed.Stats().ProbesReceived >= 2 }, "probes under the README's ACL")

	for _, refused := range []struct {
		name  string
		rules []string
	}{
		// SUBSCRIBE of the probe channel refused.
		{"subscribe", append(slices.Clone(secACLRules), "resetchannels", "&"+secPrefix+"orders")},
		// Subscribing allowed, PUBLISH of the probe refused: the
		// Subscriber's client may not publish.
		{"publish", append(slices.Clone(secACLRules), "-publish")},
	} {
		t.Run(refused.name, func(t *testing.T) {
			user := "probe-" + refused.name
			srv.CreateUser(t, user, "pw", refused.rules...)
			client := faultClient(t, srv.Addr(), func(o *redis.Options) { o.Username, o.Password = user, "pw" })
			log := newFaultLog(t)
			sub := secSubscriber(t, redispubsub.SubscriberConfig{
				Client: client, ChannelPrefix: secPrefix, ProbeInterval: 50 * time.Millisecond,
			}, log)
			orders, _ := testutil.Subscribe(t, sub, "orders")
			testutil.Eventually(t, func() bool { return len(secErrorLogs(log)) > 0 }, "the refusal logged")
			pub := secPublisher(t, secAppClient(t, srv), secPrefix, newFaultLog(t))
			secPublishReceive(t, pub, "orders", orders)
			require.NoError(t, sub.Health(context.Background()))
			// Five intervals later (the other Subscriber's probes tell the
			// time): still one error, no probe, no reconnect.
			clock := allowed.Stats().ProbesReceived
			testutil.Eventually(t, func() bool { return allowed.Stats().ProbesReceived >= clock+5 }, "five probe intervals")
			secPublishReceive(t, pub, "orders", orders)
			errs := secErrorLogs(log)
			require.Len(t, errs, 1, errs)
			require.Contains(t, errs[0], "refused the liveness probe")
			require.Contains(t, errs[0], secPrefix+redispubsub.ProbeTopicPrefix+"*")
			require.Contains(t, errs[0], "NOPERM")
			stats := sub.Stats()
			require.Zero(t, stats.ProbesReceived)
			require.Zero(t, stats.Reconnects)
		})
	}
}

// A channel revoked while subscribed (Redis disconnects the client): after
// the reconnect the revoked topic's subscription ends (its channel is
// closed), the allowed one receives again, OnReconnect reports one topic
// resubscribed and one refused, and a new Subscribe of the revoked topic is
// refused at once.
func TestACLRevokedWhileSubscribed(t *testing.T) {
	srv := redistest.Start(t)
	log := newFaultLog(t)
	client := secAppClient(t, srv)
	pub := secPublisher(t, client, secPrefix, log)
	reconnects := make(chan redispubsub.ReconnectEvent, 16)
	sub := secSubscriber(t, redispubsub.SubscriberConfig{
		Client: client, ChannelPrefix: secPrefix, SubscribeTimeout: time.Minute,
		OnReconnect: func(ev redispubsub.ReconnectEvent) { reconnects <- ev },
	}, log)
	ok, _ := testutil.Subscribe(t, sub, "ok")
	revoked, _ := testutil.Subscribe(t, sub, "revoked")

	srv.SetUser(t, "app", "resetchannels", "&"+secPrefix+"ok")
	ev := testutil.Wait(t, reconnects, "OnReconnect")
	require.Equal(t, 1, ev.Topics, "%+v", ev)
	require.Equal(t, 1, ev.Refused, "%+v", ev)
	testutil.RequireClosed(t, revoked)
	secPublishReceive(t, pub, "ok", ok)

	_, err := sub.Subscribe(secCtx(t), "revoked")
	secRequireRefused(t, err, `"`+secPrefix+`revoked"`)
	require.ErrorIs(t, pub.Publish("revoked", message.NewMessage(watermill.NewUUID(), []byte(`{}`))), redispubsub.ErrPublishRefused)
	require.EqualValues(t, 1, sub.Stats().Reconnects)
}

// Over TLS, with the server checking client certificates or not, the
// Publisher and the Subscriber work, also across a reconnect.
func TestTLSPublisherAndSubscriber(t *testing.T) {
	for _, mutual := range []bool{false, true} {
		t.Run(map[bool]string{false: "server certificate", true: "mutual"}[mutual], func(t *testing.T) {
			srv := redistest.StartTLS(t, mutual)
			conf := srv.Certs().ClientTLSNoCert()
			if mutual {
				conf = srv.Certs().ClientTLS()
			}
			client := faultClient(t, srv.Addr(), func(o *redis.Options) { o.TLSConfig = conf })
			log := newFaultLog(t)
			pub := secPublisher(t, client, "", log)
			sub := secSubscriber(t, redispubsub.SubscriberConfig{Client: client}, log)
			ch, _ := testutil.Subscribe(t, sub, "tls")
			all, _ := secSubscribePattern(t, sub, "tl*")
			secPublishReceive(t, pub, "tls", ch, all)

			srv.KillClients(t, "TYPE", "pubsub")
			testutil.Eventually(t, func() bool { return sub.Stats().Reconnects == 1 }, "reconnected over TLS")
			secPublishReceive(t, pub, "tls", ch, all)
		})
	}
}

// A client without a certificate, on a server that requires one: with TLS
// 1.3 the handshake completes on the client's side before the server
// checks the certificate, so the refusal arrives as the connection's first
// read error, a cause that need not be permanent. Subscribe fails, and its
// error names the last connection attempt's error.
func TestTLSWithoutClientCertificateFailsClearly(t *testing.T) {
	srv := redistest.StartTLS(t, true)
	client := faultClient(t, srv.Addr(), func(o *redis.Options) { o.TLSConfig = srv.Certs().ClientTLSNoCert() })
	sub := secSubscriber(t, redispubsub.SubscriberConfig{Client: client, SubscribeTimeout: time.Second}, newFaultLog(t))
	_, err := sub.Subscribe(context.Background(), "t")
	require.Error(t, err)
	t.Logf("Subscribe without a client certificate: %v", err)
	if !errors.Is(err, redispubsub.ErrConnectionRefused) {
		require.ErrorIs(t, err, redispubsub.ErrSubscribeTimeout)
		require.ErrorContains(t, err, "last connection attempt")
	}
	msg := err.Error()
	require.True(t, strings.Contains(msg, "certificate") || strings.Contains(msg, "connection reset by peer"),
		"the error names why the connection failed: %v", err)
}

// With TLS 1.2 a server refuses a client certificate in the handshake, with
// an alert: Subscribe fails at once (SubscribeTimeout is a minute) with
// ErrConnectionRefused and the alert, for a missing certificate and for one
// of another authority.
func TestTLSRefusedClientCertificateFailsAtOnce(t *testing.T) {
	srv := redistest.StartTLS(t, true)
	for name, conf := range map[string]*tls.Config{
		"no certificate":            srv.Certs().ClientTLSNoCert(),
		"certificate of another CA": srv.Certs().UntrustedClientTLS(),
	} {
		t.Run(name, func(t *testing.T) {
			conf.MaxVersion = tls.VersionTLS12
			client := faultClient(t, srv.Addr(), func(o *redis.Options) { o.TLSConfig = conf })
			sub := secSubscriber(t, redispubsub.SubscriberConfig{Client: client, SubscribeTimeout: time.Minute}, newFaultLog(t))
			_, err := sub.Subscribe(secCtx(t), "t")
			require.ErrorIs(t, err, redispubsub.ErrConnectionRefused)
			require.NotErrorIs(t, err, redispubsub.ErrSubscribeTimeout)
			require.ErrorContains(t, err, "remote error: tls:")
			t.Logf("%s: %v", name, err)
		})
	}
}

// secDialCounter counts the dials of a client whose Dialer it gives.
type secDialCounter struct{ n atomic.Int64 }

// dialer dials TCP and then TLS with conf, counting each call.
func (d *secDialCounter) dialer(conf *tls.Config) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d.n.Add(1)
		td := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: conf}
		return td.DialContext(ctx, network, addr)
	}
}

// secMaxAttempts is the most connection attempts that a backoff from lo
// doubling up to hi, each wait at least 80% of its value (the jitter), fits
// in elapsed: the first attempt at once, the next after each wait.
func secMaxAttempts(elapsed, lo, hi time.Duration) int {
	n, wait, spent := 1, lo, time.Duration(0)
	for {
		spent += wait * 4 / 5
		if spent > elapsed {
			return n
		}
		n++
		wait = min(2*wait, hi)
	}
}

// A client that does not trust the server's authority: Subscribe fails at
// once (SubscribeTimeout is a minute) with ErrConnectionRefused wrapping the
// x509 error. The Subscriber goes on retrying in case the cause is fixed,
// with its backoff: within about 2 s it dials no more often than the
// backoff allows (go-redis's own dial retries are off: DialerRetries 1).
func TestTLSWrongAuthorityFailsAtOnceWithoutRetryStorm(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 400 * time.Millisecond
	srv := redistest.StartTLS(t, false)
	var dials secDialCounter
	client := faultClient(t, srv.Addr(), func(o *redis.Options) { o.Dialer = dials.dialer(srv.Certs().WrongCATLS()) })
	start := time.Now()
	sub := secSubscriber(t, redispubsub.SubscriberConfig{
		Client: client, SubscribeTimeout: time.Minute, ReconnectBackoffMin: lo, ReconnectBackoffMax: hi,
	}, newFaultLog(t))
	_, err := sub.Subscribe(secCtx(t), "t")
	require.ErrorIs(t, err, redispubsub.ErrConnectionRefused)
	require.NotErrorIs(t, err, redispubsub.ErrSubscribeTimeout)
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknown, "%v", err)
	require.ErrorContains(t, err, "unknown authority")
	_, err = sub.SubscribePattern(secCtx(t), "p*")
	require.ErrorIs(t, err, redispubsub.ErrConnectionRefused, "a later Subscribe fails at once too")

	testutil.Eventually(t, func() bool { return dials.n.Load() >= 3 }, "retrying")
	time.Sleep(time.Until(start.Add(2 * time.Second))) // the window the dials are counted in
	n := int(dials.n.Load())
	elapsed := time.Since(start)
	bound := secMaxAttempts(elapsed, lo, hi) + 1
	t.Logf("%d dials in %v (the backoff allows %d)", n, elapsed.Round(time.Millisecond), bound)
	require.LessOrEqual(t, n, bound, "dials in %v", elapsed)
}

// A rediss:// URL, parsed by redis.ParseURL, with the test authority
// trusted, works.
func TestTLSRedissURL(t *testing.T) {
	srv := redistest.StartTLS(t, false)
	opts, err := redis.ParseURL("rediss://" + srv.Addr() + "/0")
	require.NoError(t, err)
	require.NotNil(t, opts.TLSConfig)
	opts.TLSConfig.RootCAs = srv.Certs().ClientTLSNoCert().RootCAs
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	log := newFaultLog(t)
	pub := secPublisher(t, client, "", log)
	sub := secSubscriber(t, redispubsub.SubscriberConfig{Client: client}, log)
	ch, _ := testutil.Subscribe(t, sub, "url")
	secPublishReceive(t, pub, "url", ch)
}

// secSecret is the password the secret tests look for everywhere; the
// wrong password of those tests contains it too.
const secSecret = "S3cretPw"

// secLog is a watermill.LoggerAdapter that records every log line, at any
// level, with its error and fields rendered with %v, %+v and %#v.
type secLog struct {
	shared *secLogShared
	fields watermill.LogFields
}

type secLogShared struct {
	mu    sync.Mutex
	lines []string
}

func newSecLog() *secLog { return &secLog{shared: &secLogShared{}} }

func (l *secLog) record(level, msg string, err error, fields watermill.LogFields) {
	all := l.fields.Add(fields)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s | %v | %+v | %v | %+v", level, msg, err, err, all, all)
	if err != nil {
		fmt.Fprintf(&b, " | %#v", err)
	}
	for k, v := range all {
		fmt.Fprintf(&b, " | %s=%v %+v %#v", k, v, v, v)
	}
	l.shared.mu.Lock()
	l.shared.lines = append(l.shared.lines, b.String())
	l.shared.mu.Unlock()
}

func (l *secLog) Error(msg string, err error, fields watermill.LogFields) {
	l.record("ERROR", msg, err, fields)
}
func (l *secLog) Info(msg string, fields watermill.LogFields)  { l.record("INFO", msg, nil, fields) }
func (l *secLog) Debug(msg string, fields watermill.LogFields) { l.record("DEBUG", msg, nil, fields) }
func (l *secLog) Trace(msg string, fields watermill.LogFields) { l.record("TRACE", msg, nil, fields) }
func (l *secLog) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return &secLog{shared: l.shared, fields: l.fields.Add(fields)}
}

func (l *secLog) snapshot() []string {
	l.shared.mu.Lock()
	defer l.shared.mu.Unlock()
	return append([]string(nil), l.shared.lines...)
}

// secRedisLog records go-redis's own log lines.
type secRedisLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *secRedisLog) Printf(_ context.Context, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}

// secURLClient returns a client of url (parsed by redis.ParseURL) with the
// fault tests' options, closed at the end of the test.
func secURLClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	opts.DialTimeout, opts.DialerRetries, opts.MaxRetries, opts.PoolSize = time.Second, 1, -1, 64
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// No log line (the adapter's at every level, go-redis's own), no returned
// error contains a password given in a URL or in redis.Options: a
// Subscriber with a wrong password, Subscribers and Publishers across a
// server killed and restarted.
func TestSecretNotInLogsOrErrors(t *testing.T) {
	redisLog := &secRedisLog{}
	redis.SetLogger(redisLog)
	// Registered first, so it runs after every client is closed.
	t.Cleanup(func() { redis.SetLogger(secStderrLog{}) })
	srv := redistest.Start(t, "--user", "app", "on", ">"+secSecret, "allchannels", "+@all")
	addr := srv.Addr()
	log := newSecLog()
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	wrong := secSubscriber(t, redispubsub.SubscriberConfig{
		Client: secURLClient(t, "redis://app:"+secSecret+"Wrong@"+addr), SubscribeTimeout: time.Minute,
	}, log)
	_, err := wrong.Subscribe(secCtx(t), "t")
	require.ErrorIs(t, err, redispubsub.ErrConnectionRefused)
	note(err)

	urlClient := secURLClient(t, "redis://app:"+secSecret+"@"+addr)
	optsClient := faultClient(t, addr, func(o *redis.Options) { o.Username, o.Password = "app", secSecret })
	var pubs []*redispubsub.Publisher
	var subs []*redispubsub.Subscriber
	var chs []<-chan *message.Message
	for _, client := range []*redis.Client{urlClient, optsClient} {
		pubs = append(pubs, secPublisher(t, client, "", log))
		sub := secSubscriber(t, redispubsub.SubscriberConfig{Client: client, SubscribeTimeout: 300 * time.Millisecond}, log)
		subs = append(subs, sub)
		ch, _ := testutil.Subscribe(t, sub, "restart")
		chs = append(chs, ch)
	}
	for _, pub := range pubs {
		secPublishReceive(t, pub, "restart", chs...)
	}

	srv.Kill()
	for _, pub := range pubs {
		err := pub.Publish("restart", message.NewMessage(watermill.NewUUID(), []byte(`{}`)))
		require.Error(t, err)
		note(err)
	}
	for _, sub := range subs {
		_, err := sub.Subscribe(context.Background(), "while-down")
		require.ErrorIs(t, err, redispubsub.ErrSubscribeTimeout)
		note(err)
	}
	srv.Restart()
	for _, sub := range subs {
		testutil.Eventually(t, func() bool { return sub.Stats().Reconnects == 1 }, "reconnected")
	}
	for _, pub := range pubs {
		secPublishReceive(t, pub, "restart", chs...)
	}
	for _, sub := range subs {
		require.NoError(t, sub.Close())
	}
	require.NoError(t, wrong.Close())

	lines := log.snapshot()
	require.NotEmpty(t, lines)
	redisLog.mu.Lock()
	lines = append(lines, redisLog.lines...)
	redisLog.mu.Unlock()
	for _, err := range errs {
		lines = append(lines, fmt.Sprintf("%v | %+v | %#v", err, err, err))
	}
	for _, line := range lines {
		require.NotContains(t, line, secSecret)
	}
	t.Logf("%d log lines and errors checked", len(lines))
}

// secStderrLog is go-redis's default logger, restored after the secret
// test.
type secStderrLog struct{}

func (secStderrLog) Printf(_ context.Context, format string, v ...any) {
	fmt.Fprintf(os.Stderr, "redis: "+format+"\n", v...)
}

// The quickstart example, with REDIS_URL holding a password, prints it
// nowhere (stdout and stderr): with the right password, with a wrong one
// (it fails), with a URL that does not parse (it fails), and over TLS with a
// rediss:// URL (the test authority trusted through SSL_CERT_FILE), which
// works.
func TestSecretNotInQuickstartOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs examples/quickstart")
	}
	rules := []string{"--user", "app", "on", ">" + secSecret, "allchannels", "+@all"}
	srv := redistest.Start(t, rules...)
	tlsSrv := redistest.StartTLS(t, false, rules...)

	bin := filepath.Join(t.TempDir(), "quickstart")
	build := exec.Command("go", "build", "-o", bin, "./examples/quickstart")
	build.Dir = ".."
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	for _, c := range []struct {
		name, url string
		ok        bool
	}{
		{"password", "redis://app:" + secSecret + "@" + srv.Addr(), true},
		{"wrong password", "redis://app:" + secSecret + "Wrong@" + srv.Addr(), false},
		{"rediss", "rediss://app:" + secSecret + "@" + tlsSrv.Addr(), true},
		{"malformed URL", "redis://app:" + secSecret + "@127.0.0.1:6x79", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = append(os.Environ(), "REDIS_URL="+c.url, "SSL_CERT_FILE="+tlsSrv.Certs().CAFile)
			out, err := cmd.CombinedOutput()
			t.Logf("quickstart output:\n%s", out)
			if c.ok {
				require.NoError(t, err)
				require.Contains(t, string(out), "all 5 orders handled or poisoned")
			} else {
				require.Error(t, err)
			}
			require.NotContains(t, string(out), secSecret)
		})
	}
}

// secStall makes the connections its dialer opened stop taking bytes, as a
// socket whose send buffer is full does: once stalled, every Write blocks
// until the connection is closed, its write deadline passes or release is
// called. Reads go on, and connections dialled later are not stalled.
// (redistest's Proxy.Blackhole reads and discards what clients send, so
// their writes never block.)
type secStall struct {
	mu       sync.Mutex
	conns    []*secStallConn
	released chan struct{} // closed by release: blocked Writes fail
	blocked  atomic.Int64  // Writes blocked now
	once     sync.Once
}

func newSecStall() *secStall { return &secStall{released: make(chan struct{})} }

func (s *secStall) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := &secStallConn{Conn: conn, stall: s, closed: make(chan struct{})}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	return c, nil
}

// stallOpen stalls the connections dialled so far.
func (s *secStall) stallOpen() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.stalled.Store(true)
	}
}

// release makes the blocked Writes fail; it is idempotent.
func (s *secStall) release() { s.once.Do(func() { close(s.released) }) }

type secStallConn struct {
	net.Conn
	stall     *secStall
	stalled   atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	deadline  time.Time
}

func (c *secStallConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *secStallConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *secStallConn) Write(p []byte) (int, error) {
	if !c.stalled.Load() {
		return c.Conn.Write(p)
	}
	c.stall.blocked.Add(1)
	defer c.stall.blocked.Add(-1)
	c.mu.Lock()
	deadline := c.deadline
	c.mu.Unlock()
	var expired <-chan time.Time
	if !deadline.IsZero() {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case <-c.stall.released:
		return 0, net.ErrClosed
	case <-expired:
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}
	}
}

func (c *secStallConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// secStalledSubscriber returns a Subscriber whose client dials through
// stall, with a WriteTimeout of a minute (so that only the Subscriber can
// end a blocked write in time), closed at the end of the test.
func secStalledSubscriber(t *testing.T, srv *redistest.Server, stall *secStall, configure func(*redispubsub.SubscriberConfig)) *redispubsub.Subscriber {
	t.Helper()
	t.Cleanup(stall.release) // last: whatever happened, nothing stays blocked
	client := faultClient(t, srv.Addr(), func(o *redis.Options) {
		o.Dialer, o.WriteTimeout = stall.dial, time.Minute
	})
	config := redispubsub.SubscriberConfig{Client: client, SubscribeTimeout: time.Minute}
	if configure != nil {
		configure(&config)
	}
	sub, err := redispubsub.NewSubscriber(config, newFaultLog(t))
	require.NoError(t, err)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		<-stall.released
		_ = sub.Close()
	}()
	t.Cleanup(func() {
		stall.release()
		<-closed
	})
	return sub
}

// With the Subscriber's socket taking no more bytes while many SUBSCRIBEs
// wait to be written (the client's WriteTimeout is a minute), a concurrent
// Subscribe, SubscribePattern or joining Subscribe with a 300 ms context
// returns its context's error, and Close returns: no lock is held while a
// command is on the socket.
func TestSecurityFullSocketStallsNeitherSubscribeNorClose(t *testing.T) {
	srv := redistest.Start(t)
	stall := newSecStall()
	sub := secStalledSubscriber(t, srv, stall, nil)
	testutil.Subscribe(t, sub, "ok")

	stall.stallOpen()
	const n = 50
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := strings.Repeat("x", 1024)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = sub.Subscribe(ctx, fmt.Sprintf("big.%d.%s", i, long))
		}()
	}
	testutil.Eventually(t, func() bool { return stall.blocked.Load() > 0 }, "a write blocked")

	for _, probe := range []struct {
		name, topic string
		pattern     bool
	}{{"Subscribe", "probe", false}, {"SubscribePattern", "probe.*", true}, {"joining Subscribe", "ok", false}} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		errc := make(chan error, 1)
		go func() {
			var err error
			if probe.pattern {
				_, err = sub.SubscribePattern(ctx, probe.topic)
			} else {
				_, err = sub.Subscribe(ctx, probe.topic)
			}
			errc <- err
		}()
		err := testutil.Wait(t, errc, probe.name)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, probe.name)
	}
	require.Positive(t, stall.blocked.Load(), "the write is still blocked")

	closeDone := make(chan struct{})
	go func() {
		_ = sub.Close()
		close(closeDone)
	}()
	testutil.Wait(t, closeDone, "Close")
	subscribed := make(chan struct{})
	go func() {
		wg.Wait()
		close(subscribed)
	}()
	testutil.Wait(t, subscribed, "the blocked Subscribes")
}

// A connection whose socket takes no more bytes, while Redis sends nothing,
// is silent: the health check drops it within HealthCheckInterval, also
// while a command is blocked on it (the client's WriteTimeout is a minute),
// and the Subscriber reconnects; the Subscribe whose SUBSCRIBE was blocked
// is confirmed on the new connection.
func TestSecurityFullSocketIsDroppedByTheHealthCheck(t *testing.T) {
	srv := redistest.Start(t)
	stall := newSecStall()
	sub := secStalledSubscriber(t, srv, stall, func(c *redispubsub.SubscriberConfig) {
		c.HealthCheckInterval = 300 * time.Millisecond
	})
	pub, _ := wmPubSub(t, srv, nil)
	ok, _ := testutil.Subscribe(t, sub, "ok")

	stall.stallOpen()
	type result struct {
		ch  <-chan *message.Message
		err error
	}
	done := make(chan result, 1)
	ctx := secCtx(t)
	go func() {
		ch, err := sub.Subscribe(ctx, "after")
		done <- result{ch, err}
	}()
	testutil.Eventually(t, func() bool { return stall.blocked.Load() > 0 }, "the SUBSCRIBE blocked")
	r := testutil.Wait(t, done, "the Subscribe")
	require.NoError(t, r.err)
	// The reconnect is counted once every resubscription is confirmed,
	// which may be just after this one.
	testutil.Eventually(t, func() bool { return sub.Stats().Reconnects == 1 }, "one reconnect")
	secPublishReceive(t, pub, "after", r.ch)
	secPublishReceive(t, pub, "ok", ok)
}

// The README's ACL rules for a history: what a Publisher with History and
// a Subscriber with Recover (and SubscribeFrom) need on top of the
// channels'. Scripts run with their caller's permissions, so the
// Publisher's user needs the commands the script calls.
var (
	secHistoryPublisherRules = []string{"%RW~rps:*:{" + secPrefix + "*",
		"+evalsha", "+script|load", "+hget", "+hset", "+hincrby", "+del", "+rpush", "+ltrim", "+pexpire"}
	secHistorySubscriberRules = []string{"%R~rps:*:{" + secPrefix + "*", "+multi", "+exec", "+hmget", "+lrange"}
)

// A Publisher with History and a recovering Subscriber, each under a user
// with the channels' rules and the README's history rules alone: the
// history is written, read after a reconnect and by SubscribeFrom, and
// nothing is logged as an error. A Subscriber without the history rules
// gets Redis's NOPERM from SubscribeFrom.
func TestACLHistoryAndRecovery(t *testing.T) {
	srv := redistest.Start(t)
	srv.CreateUser(t, "pub", "pw", append(slices.Clone(secACLRules), secHistoryPublisherRules...)...)
	srv.CreateUser(t, "sub", "pw", append(slices.Clone(secACLRules), secHistorySubscriberRules...)...)
	login := func(user string) *redis.Client {
		return faultClient(t, srv.Addr(), func(o *redis.Options) { o.Username, o.Password = user, "pw" })
	}
	log := newFaultLog(t)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{
		Client: login("pub"), ChannelPrefix: secPrefix, History: redispubsub.History{Size: 100},
	}, log)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	reconnects := make(chan redispubsub.ReconnectEvent, 1)
	sub := secSubscriber(t, redispubsub.SubscriberConfig{
		Client: login("sub"), ChannelPrefix: secPrefix, Recover: true,
		OnReconnect: func(ev redispubsub.ReconnectEvent) { reconnects <- ev },
	}, log)
	ch, _ := testutil.Subscribe(t, sub, "orders")
	publish := func(n int) {
		for range n {
			require.NoError(t, pub.Publish("orders", message.NewMessage(watermill.NewUUID(), []byte(`{}`))))
		}
	}
	receive := func(ch <-chan *message.Message, n int) []redispubsub.Position {
		var got []redispubsub.Position
		for range n {
			msg := testutil.Receive(t, ch)
			pos, ok := redispubsub.PositionOf(msg)
			require.True(t, ok)
			got = append(got, pos)
			msg.Ack()
		}
		return got
	}
	publish(1)
	first := receive(ch, 1)[0]
	require.Equal(t, uint64(1), first.Offset)
	require.Positive(t, srv.KillClients(t, "TYPE", "pubsub"))
	publish(2) // missed, or not: either way the history is read after the reconnect
	testutil.Wait(t, reconnects, "the reconnect")
	got := receive(ch, 2)
	require.Equal(t, uint64(3), got[1].Offset)

	from, err := sub.SubscribeFrom(secCtx(t), "orders", first)
	require.NoError(t, err)
	got = receive(from, 2)
	require.Equal(t, []uint64{2, 3}, []uint64{got[0].Offset, got[1].Offset})
	errs := slices.DeleteFunc(secErrorLogs(log), func(e string) bool { return strings.HasPrefix(e, "Redis Pub/Sub connection lost") })
	require.Empty(t, errs, "the kill's log alone")

	plain := secSubscriber(t, redispubsub.SubscriberConfig{Client: secAppClient(t, srv), ChannelPrefix: secPrefix}, log)
	_, err = plain.SubscribeFrom(secCtx(t), "orders", first)
	require.ErrorContains(t, err, "NOPERM")
	t.Log(err)
}
