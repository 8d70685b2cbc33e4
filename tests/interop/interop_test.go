// Package interop_test checks the wire compatibility of redispubsub with
// the TypeScript side, for real: a Node peer (peer.mjs, using ioredis,
// @graphql-yoga/redis-event-target and @graphql-yoga/subscription) and Go
// exchange events through one redis-server that internal/redistest starts per
// test, in both directions, in both formats (the JSON envelope of the event
// target, the raw JSON of createPubSub), with and without a channel prefix,
// with payloads that are not JSON (base64 in the envelope), and with what a
// TypeScript peer can send that Go cannot decode.
//
// A PSUBSCRIBE * connection (the "tap") records every message Redis carries,
// so that each test also checks the exact bytes on the wire; run with -v to
// see them logged.
//
// The tests skip themselves when node or the peer's node_modules is missing:
// run `npm ci` in tests/interop, or scripts/test.sh, which does it.
package interop_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
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

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// interopTimeout bounds every wait; it only fires when something hangs. Node
// takes 1-3 s to start on a loaded 2-core machine, so it is generous.
const interopTimeout = 60 * time.Second

// interopPeerTimeoutMs is the peer's own bound on a listen (--timeout-ms).
const interopPeerTimeoutMs = "50000"

// interopNeedNode skips the test when the Node peer cannot run.
func interopNeedNode(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not found in PATH: the interop tests need Node.js 20+ and the peer's packages; " +
			"install Node, then run npm ci in tests/interop or scripts/test.sh")
	}
	for _, dir := range []string{
		"node_modules/ioredis",
		"node_modules/@graphql-yoga/redis-event-target",
		"node_modules/@graphql-yoga/subscription",
	} {
		if _, err := os.Stat(dir); err != nil {
			t.Skipf("tests/interop/%s is missing: run npm ci in tests/interop or scripts/test.sh", dir)
		}
	}
}

// interopPeer is one run of peer.mjs.
type interopPeer struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd

	mu      sync.Mutex
	lines   []string
	eof     bool
	notify  chan struct{} // signalled when lines or eof change
	stderr  bytes.Buffer  // guarded by mu
	exited  chan struct{}
	exitErr error // set before exited is closed
	started time.Time
}

// interopStart starts `node peer.mjs args...` against srv. The process is
// killed, if it still runs, at the end of the test.
func interopStart(t *testing.T, srv *redistest.Server, args ...string) *interopPeer {
	t.Helper()
	p := &interopPeer{
		t:      t,
		name:   strings.Join(args[:min(len(args), 5)], " "),
		cmd:    exec.Command("node", append([]string{"peer.mjs"}, args...)...),
		notify: make(chan struct{}, 1),
		exited: make(chan struct{}),
	}
	p.cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+srv.Addr())
	p.cmd.Stderr = interopWriter{p}
	stdout, err := p.cmd.StdoutPipe()
	require.NoError(t, err)
	p.started = time.Now()
	require.NoError(t, p.cmd.Start(), "start node peer.mjs")
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			p.signal()
		}
		_, _ = io.Copy(io.Discard, stdout) // after a scan error, let the peer finish writing
		p.mu.Lock()
		p.eof = true
		p.mu.Unlock()
		p.signal()
		p.exitErr = p.cmd.Wait() // only after every read of stdout, as StdoutPipe asks
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

type interopWriter struct{ p *interopPeer }

func (w interopWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.stderr.Write(b)
}

func (p *interopPeer) signal() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

func (p *interopPeer) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// next returns the peer's next stdout line, failing the test when the peer
// ends or nothing comes within interopTimeout.
func (p *interopPeer) next() string {
	p.t.Helper()
	timeout := time.After(interopTimeout)
	for {
		p.mu.Lock()
		if len(p.lines) > 0 {
			line := p.lines[0]
			p.lines = p.lines[1:]
			p.mu.Unlock()
			return line
		}
		eof := p.eof
		p.mu.Unlock()
		if eof {
			select {
			case <-p.exited:
			case <-timeout:
			}
			p.t.Fatalf("peer %q ended without the expected line (%v); stderr:\n%s", p.name, p.exitErr, p.stderrText())
		}
		select {
		case <-p.notify:
		case <-timeout:
			p.t.Fatalf("peer %q: no line within %v; stderr:\n%s", p.name, interopTimeout, p.stderrText())
		}
	}
}

// ready waits for the listener's {"ready":true}: Redis confirmed its
// SUBSCRIBE.
func (p *interopPeer) ready() {
	p.t.Helper()
	line := p.next()
	require.JSONEq(p.t, `{"ready":true}`, line, "first line of peer %q", p.name)
	p.t.Logf("peer %q ready after %v", p.name, time.Since(p.started).Round(time.Millisecond))
}

// wait waits for the peer to exit and returns its exit code.
func (p *interopPeer) wait() int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(interopTimeout):
		p.t.Fatalf("peer %q did not exit within %v; stderr:\n%s", p.name, interopTimeout, p.stderrText())
	}
	if p.exitErr == nil {
		return 0
	}
	var exitErr *exec.ExitError
	require.ErrorAs(p.t, p.exitErr, &exitErr, "peer %q", p.name)
	return exitErr.ExitCode()
}

// requireDone waits for the peer to exit 0 and checks it printed nothing more.
func (p *interopPeer) requireDone() {
	p.t.Helper()
	code := p.wait()
	require.Zero(p.t, code, "peer %q exit code; stderr:\n%s", p.name, p.stderrText())
	p.mu.Lock()
	rest := p.lines
	p.mu.Unlock()
	require.Empty(p.t, rest, "peer %q printed more than expected", p.name)
	p.t.Logf("peer %q done after %v", p.name, time.Since(p.started).Round(time.Millisecond))
}

// interopRun runs the peers (one per args) concurrently to their end, which
// must be exit 0, and returns their stdout lines.
func interopRun(t *testing.T, srv *redistest.Server, argss ...[]string) [][]string {
	t.Helper()
	peers := make([]*interopPeer, len(argss))
	for i, args := range argss {
		peers[i] = interopStart(t, srv, args...)
	}
	out := make([][]string, len(peers))
	for i, p := range peers {
		code := p.wait()
		require.Zero(t, code, "peer %q exit code; stderr:\n%s", p.name, p.stderrText())
		p.mu.Lock()
		out[i] = p.lines
		p.mu.Unlock()
		t.Logf("peer %q done after %v", p.name, time.Since(p.started).Round(time.Millisecond))
	}
	return out
}

// interopWire is one message Redis carried.
type interopWire struct{ channel, body string }

// interopTap records every message published on the server, the Go
// Subscribers' liveness probes left out.
type interopTap struct {
	t      *testing.T
	client *redis.Client
	ps     *redis.PubSub
}

func interopNewTap(t *testing.T, srv *redistest.Server) *interopTap {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	ps := client.PSubscribe(context.Background(), "*")
	t.Cleanup(func() {
		_ = ps.Close()
		_ = client.Close()
	})
	// The first reply is the PSUBSCRIBE confirmation.
	reply, err := ps.ReceiveTimeout(context.Background(), interopTimeout)
	require.NoError(t, err)
	require.IsType(t, &redis.Subscription{}, reply)
	return &interopTap{t: t, client: client, ps: ps}
}

// take returns the next n messages, in the order Redis delivered them.
func (tp *interopTap) take(n int) []interopWire {
	tp.t.Helper()
	var got []interopWire
	deadline := time.Now().Add(interopTimeout)
	for len(got) < n {
		reply, err := tp.ps.ReceiveTimeout(context.Background(), time.Until(deadline))
		require.NoError(tp.t, err, "tap: %d of %d messages", len(got), n)
		if msg, ok := reply.(*redis.Message); ok && !strings.Contains(msg.Channel, redispubsub.ProbeTopicPrefix) {
			got = append(got, interopWire{msg.Channel, msg.Payload})
			tp.t.Logf("wire: channel %q body %s", msg.Channel, strconv.Quote(msg.Payload))
		}
	}
	return got
}

// interopPublisher and interopSubscriber return the Go side's Publishers and
// Subscribers, each with its own client, closed at the end of the test.
func interopPublisher(t *testing.T, srv *redistest.Server, config redispubsub.PublisherConfig) *redispubsub.Publisher {
	t.Helper()
	config.Client = srv.NewClient(t)
	pub, err := redispubsub.NewPublisher(config, nil)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, pub.Close()) })
	return pub
}

func interopSubscriber(t *testing.T, srv *redistest.Server, config redispubsub.SubscriberConfig) *redispubsub.Subscriber {
	t.Helper()
	config.Client = srv.NewClient(t)
	sub, err := redispubsub.NewSubscriber(config, nil)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, sub.Close()) })
	return sub
}

// interopSubscribe subscribes until the end of the test.
func interopSubscribe(t *testing.T, sub message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	return ch
}

func interopReceive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		require.True(t, ok, "output channel closed")
		msg.Ack()
		return msg
	case <-time.After(interopTimeout):
		t.Fatal("no message")
		return nil
	}
}

func interopRequireNothing[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %+v", what, v)
	default:
	}
}

// interopCall is the payload of the tests' events.
type interopCall struct {
	OK   bool   `json:"ok"`
	N    int    `json:"n"`
	Text string `json:"text,omitempty"`
}

type interopEvent = redispubsub.Event[interopCall]

// interopTarget returns an EventTarget closed at the end of the test, whose
// error hook sends to errs (nil: fail the test).
func interopTarget(t *testing.T, pub message.Publisher, sub message.Subscriber, errs chan<- error) *redispubsub.EventTarget[interopCall] {
	t.Helper()
	target, err := redispubsub.NewEventTarget[interopCall](pub, sub,
		redispubsub.WithErrorHandler(func(topic string, err error) {
			if errs == nil {
				t.Errorf("event target error on %q: %v", topic, err)
				return
			}
			errs <- err
		}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Close() })
	return target
}

// interopListen adds a listener that sends its events to the returned
// channel.
func interopListen(t *testing.T, target *redispubsub.EventTarget[interopCall], topic string) <-chan interopEvent {
	t.Helper()
	ch := make(chan interopEvent, 64)
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	defer cancel()
	_, err := target.AddEventListener(ctx, topic, func(_ context.Context, ev interopEvent) { ch <- ev })
	require.NoError(t, err)
	return ch
}

func interopNextEvent(t *testing.T, ch <-chan interopEvent) interopEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(interopTimeout):
		t.Fatal("no event")
		return interopEvent{}
	}
}

func interopCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	t.Cleanup(cancel)
	return ctx
}

// interopTSLine is what the peer prints per event in eventtarget mode.
type interopTSLine struct {
	Type   string          `json:"type"`
	Detail json.RawMessage `json:"detail"`
	// PayloadHex is, for a detail with payload_encoding "base64", the bytes
	// that Node's Buffer.from(payload, "base64") decodes, in hex.
	PayloadHex *string `json:"payloadHex"`
}

// interopDetail is a received TypeScript detail, member by member.
type interopDetail map[string]json.RawMessage

func (d interopDetail) str(t *testing.T, key string) string {
	t.Helper()
	raw, ok := d[key]
	require.True(t, ok, "detail has no %q: %v", key, d)
	var s string
	require.NoError(t, json.Unmarshal(raw, &s), "detail.%s is not a string: %s", key, raw)
	return s
}

func (d interopDetail) keys() []string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// interopTSEvent parses a line of `listen --mode eventtarget`, checks that the
// event's type is channel and that the detail, as JSON.stringify wrote it,
// is wire byte for byte (which holds when the Go body is what JSON.stringify
// gives for the parsed object), and returns the detail.
func interopTSEvent(t *testing.T, line, channel, wire string) interopDetail {
	t.Helper()
	d, payloadHex := interopTSEventHex(t, line, channel, wire)
	require.Nil(t, payloadHex, "no base64 payload expected: %s", line)
	return d
}

// interopTSEventHex is interopTSEvent for an event whose payload may be
// base64: it also returns the peer's payloadHex, nil when it printed none.
func interopTSEventHex(t *testing.T, line, channel, wire string) (interopDetail, *string) {
	t.Helper()
	var l interopTSLine
	require.NoError(t, json.Unmarshal([]byte(line), &l), "peer line %s", line)
	require.Equal(t, channel, l.Type, "TypeScript event type is the whole channel")
	prefix := `{"type":` + strconv.Quote(channel) + `,"detail":`
	suffix := "}"
	if l.PayloadHex != nil {
		suffix = `,"payloadHex":"` + *l.PayloadHex + `"}`
	}
	require.True(t, strings.HasPrefix(line, prefix) && strings.HasSuffix(line, suffix), "peer line %s", line)
	assert.Equal(t, wire, strings.TrimSuffix(strings.TrimPrefix(line, prefix), suffix),
		"JSON.stringify(JSON.parse(body)) gives back the Go body byte for byte")
	var d interopDetail
	require.NoError(t, json.Unmarshal(l.Detail, &d), "detail %s", l.Detail)
	return d, l.PayloadHex
}

var interopUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// interopStamp returns the publisher id of the sequence stamp in an envelope
// body, and checks its sequence number.
func interopStamp(t *testing.T, body string, seq int) string {
	t.Helper()
	var env struct {
		Metadata map[string]string `json:"metadata"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &env))
	require.Equal(t, strconv.Itoa(seq), env.Metadata[redispubsub.MetadataSequence], "sequence stamp of %s", body)
	pubID := env.Metadata[redispubsub.MetadataPublisher]
	require.NotEmpty(t, pubID, "publisher stamp of %s", body)
	return pubID
}

// interopChannelSum returns the MetadataChannel member a Go Publisher
// writes for channel: 32-bit FNV-1a of its bytes, as 8 hex digits.
func interopChannelSum(channel string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(channel))
	return fmt.Sprintf("%08x", h.Sum32())
}

// interopSince returns the MetadataSince member of a stamped body: when its
// publisher began the channel's sequence, in Unix milliseconds.
func interopSince(t *testing.T, body string) string {
	t.Helper()
	var env struct {
		Metadata map[string]string `json:"metadata"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &env))
	since := env.Metadata[redispubsub.MetadataSince]
	_, err := strconv.ParseInt(since, 10, 64)
	require.NoError(t, err, "the time of the stream's start in %s", body)
	return since
}

// What the TypeScript peer sends in (a): the detail of its CustomEvent, as
// JSON.stringify writes it (non-ASCII, quotes and '<' included), with and
// without an id.
const (
	interopDetailWithID   = `{"type":"call.responded","id":"uuid-123","payload":{"ok":true,"n":1,"text":"é \"q\" <b>"}}`
	interopPayloadWithID  = `{"ok":true,"n":1,"text":"é \"q\" <b>"}`
	interopDetailTypeOnly = `{"type":"user.created","payload":{"ok":false,"n":2}}`
	interopPayloadType    = `{"ok":false,"n":2}`
)

// (a) TypeScript dispatches CustomEvent(topic, {detail: {type, id, payload}})
// through createRedisEventTarget; Go receives it through a Subscriber with
// the JSON envelope marshaler and through an EventTarget.
func TestInterop_EnvelopeFromTypeScript(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	srv := redistest.Start(t)
	tap := interopNewTap(t, srv)
	sub := interopSubscriber(t, srv, redispubsub.SubscriberConfig{})
	target := interopTarget(t, interopPublisher(t, srv, redispubsub.PublisherConfig{}), sub, nil)

	withID := interopSubscribe(t, sub, "call.responded:uuid-123")
	typeOnly := interopSubscribe(t, sub, "user.created")
	withIDEvents := interopListen(t, target, "call.responded:uuid-123")
	typeOnlyEvents := interopListen(t, target, "user.created")
	noDetail := interopSubscribe(t, sub, "call.ping")
	noDetailEvents := interopListen(t, target, "call.ping")

	interopRun(t, srv,
		[]string{"dispatch", "--mode", "eventtarget", "--topic", "call.responded:uuid-123", "--detail", interopDetailWithID},
		[]string{"dispatch", "--mode", "eventtarget", "--topic", "user.created", "--detail", interopDetailTypeOnly},
		// new CustomEvent("call.ping"): its detail is null.
		[]string{"dispatch", "--mode", "eventtarget", "--topic", "call.ping"},
	)

	wire := tap.take(3)
	slices.SortFunc(wire, func(a, b interopWire) int { return strings.Compare(a.channel, b.channel) })
	assert.Equal(t, []interopWire{
		{"call.ping", "null"},
		{"call.responded:uuid-123", interopDetailWithID},
		{"user.created", interopDetailTypeOnly},
	}, wire, "the event target publishes JSON.stringify(detail) on the event type")

	for _, c := range []struct {
		name    string
		ch      <-chan *message.Message
		events  <-chan interopEvent
		typ, id string
		payload string
		want    interopCall
	}{
		{"with id", withID, withIDEvents, "call.responded", "uuid-123", interopPayloadWithID, interopCall{OK: true, N: 1, Text: `é "q" <b>`}},
		{"type only", typeOnly, typeOnlyEvents, "user.created", "", interopPayloadType, interopCall{N: 2}},
		{"null detail", noDetail, noDetailEvents, "call.ping", "", "null", interopCall{}},
	} {
		msg := interopReceive(t, c.ch)
		assert.Equal(t, c.payload, string(msg.Payload), "%s: the payload is the detail's payload, byte for byte", c.name)
		assert.Regexp(t, interopUUID, msg.UUID, "%s: a body without uuid gets a fresh one", c.name)
		assert.Empty(t, msg.Metadata, "%s: no metadata", c.name)

		ev := interopNextEvent(t, c.events)
		assert.Equal(t, c.typ, ev.Type, c.name)
		assert.Equal(t, c.id, ev.ID, c.name)
		assert.Equal(t, c.want, ev.Payload, c.name)
		assert.Equal(t, c.payload, string(ev.Message.Payload), c.name)
	}
	stats := sub.Stats()
	assert.EqualValues(t, 3, stats.Received)
	assert.Zero(t, stats.DecodeFailures)
	assert.Zero(t, stats.Gaps)
}

// (a) Go dispatches through an EventTarget and publishes with a Publisher
// (JSON envelope); the TypeScript event target's listener gets the same
// object {type, id, payload}, plus uuid and, when there is any, metadata
// (the sequence stamp included, unless the Publisher disables it).
func TestInterop_EnvelopeToTypeScript(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	srv := redistest.Start(t)
	tap := interopNewTap(t, srv)
	listenWithID := interopStart(t, srv, "listen", "--mode", "eventtarget", "--topic", "call.responded:uuid-123",
		"--count", "3", "--timeout-ms", interopPeerTimeoutMs)
	listenTypeOnly := interopStart(t, srv, "listen", "--mode", "eventtarget", "--topic", "user.created",
		"--count", "2", "--timeout-ms", interopPeerTimeoutMs)
	pub := interopPublisher(t, srv, redispubsub.PublisherConfig{})
	unstamped := interopPublisher(t, srv, redispubsub.PublisherConfig{DisableSequenceNumbers: true})
	target := interopTarget(t, pub, interopSubscriber(t, srv, redispubsub.SubscriberConfig{}), nil)
	listenWithID.ready()
	listenTypeOnly.ready()
	ctx := interopCtx(t)

	// 1. EventTarget.DispatchEvent, type:id.
	require.NoError(t, target.DispatchEvent(ctx, interopEvent{
		Type: "call.responded", ID: "uuid-123", Payload: interopCall{OK: true, N: 1, Text: "é"},
	}))
	// 2. Publisher.Publish with metadata.
	withMeta := message.NewMessage(watermill.NewUUID(), []byte(`{"ok":true,"n":2}`))
	withMeta.Metadata.Set("trace", "t-1")
	require.NoError(t, pub.Publish("call.responded:uuid-123", withMeta))
	// 3. Publisher.Publish, no stamp, no metadata: exactly {type, id, payload, uuid}.
	plain := message.NewMessage(watermill.NewUUID(), []byte(`{"ok":true,"n":3}`))
	require.NoError(t, unstamped.Publish("call.responded:uuid-123", plain))
	// 4. EventTarget.DispatchEvent, type only: no id member.
	require.NoError(t, target.DispatchEvent(ctx, interopEvent{Type: "user.created", Payload: interopCall{N: 4}}))
	// 5. An empty payload travels as null.
	empty := message.NewMessage(watermill.NewUUID(), nil)
	require.NoError(t, unstamped.Publish("user.created", empty))

	wire := tap.take(5)
	for _, w := range wire {
		require.True(t, strings.HasPrefix(w.body, `{"type":"`), "%s", w.body)
	}

	// The Publisher's sequence numbers run per channel.
	var env1 struct{ UUID string }
	require.NoError(t, json.Unmarshal([]byte(wire[0].body), &env1))
	pubID := interopStamp(t, wire[0].body, 1)
	require.Equal(t, pubID, interopStamp(t, wire[1].body, 2))
	require.Equal(t, pubID, interopStamp(t, wire[3].body, 1))
	since := interopSince(t, wire[0].body)
	require.Equal(t, since, interopSince(t, wire[1].body))
	since4 := interopSince(t, wire[3].body)
	sumWithID, sumTypeOnly := interopChannelSum("call.responded:uuid-123"), interopChannelSum("user.created")

	want := []interopWire{
		{"call.responded:uuid-123", `{"type":"call.responded","id":"uuid-123","payload":{"ok":true,"n":1,"text":"é"},"uuid":"` + env1.UUID +
			`","metadata":{"rps_ch":"` + sumWithID + `","rps_pub":"` + pubID + `","rps_seq":"1","rps_since":"` + since + `"}}`},
		{"call.responded:uuid-123", `{"type":"call.responded","id":"uuid-123","payload":{"ok":true,"n":2},"uuid":"` + withMeta.UUID +
			`","metadata":{"rps_ch":"` + sumWithID + `","rps_pub":"` + pubID + `","rps_seq":"2","rps_since":"` + since + `","trace":"t-1"}}`},
		{"call.responded:uuid-123", `{"type":"call.responded","id":"uuid-123","payload":{"ok":true,"n":3},"uuid":"` + plain.UUID + `"}`},
		{"user.created", ""}, // the UUID of a dispatched event is known from the wire only: below
		{"user.created", `{"type":"user.created","payload":null,"uuid":"` + empty.UUID + `"}`},
	}
	var env4 struct{ UUID string }
	require.NoError(t, json.Unmarshal([]byte(wire[3].body), &env4))
	want[3].body = `{"type":"user.created","payload":{"ok":false,"n":4},"uuid":"` + env4.UUID +
		`","metadata":{"rps_ch":"` + sumTypeOnly + `","rps_pub":"` + pubID + `","rps_seq":"1","rps_since":"` + since4 + `"}}`
	assert.Equal(t, want, wire, "Go's envelope bytes")
	assert.Regexp(t, interopUUID, env1.UUID)
	assert.Regexp(t, interopUUID, env4.UUID)

	// What the TypeScript listeners got.
	for i, w := range wire[:3] {
		d := interopTSEvent(t, listenWithID.next(), "call.responded:uuid-123", w.body)
		assert.Equal(t, "call.responded", d.str(t, "type"), "event %d", i)
		assert.Equal(t, "uuid-123", d.str(t, "id"), "event %d", i)
		assert.Regexp(t, interopUUID, d.str(t, "uuid"), "event %d", i)
		switch i {
		case 0:
			assert.JSONEq(t, `{"ok":true,"n":1,"text":"é"}`, string(d["payload"]))
			assert.Equal(t, env1.UUID, d.str(t, "uuid"))
			assert.JSONEq(t, `{"rps_ch":"`+sumWithID+`","rps_pub":"`+pubID+`","rps_seq":"1","rps_since":"`+since+`"}`, string(d["metadata"]))
			assert.Equal(t, []string{"id", "metadata", "payload", "type", "uuid"}, d.keys())
		case 1:
			assert.JSONEq(t, `{"ok":true,"n":2}`, string(d["payload"]))
			assert.Equal(t, withMeta.UUID, d.str(t, "uuid"))
			assert.JSONEq(t, `{"rps_ch":"`+sumWithID+`","rps_pub":"`+pubID+`","rps_seq":"2","rps_since":"`+since+`","trace":"t-1"}`, string(d["metadata"]))
			assert.Equal(t, []string{"id", "metadata", "payload", "type", "uuid"}, d.keys())
		case 2:
			assert.JSONEq(t, `{"ok":true,"n":3}`, string(d["payload"]))
			assert.Equal(t, plain.UUID, d.str(t, "uuid"))
			assert.Equal(t, []string{"id", "payload", "type", "uuid"}, d.keys(), "no metadata member without metadata")
		}
	}
	for i, w := range wire[3:] {
		d := interopTSEvent(t, listenTypeOnly.next(), "user.created", w.body)
		assert.Equal(t, "user.created", d.str(t, "type"))
		assert.NotContains(t, d, "id", "no id member for a topic without id, as JSON.stringify drops an undefined id")
		if i == 0 {
			assert.JSONEq(t, `{"ok":false,"n":4}`, string(d["payload"]))
			assert.Equal(t, env4.UUID, d.str(t, "uuid"))
		} else {
			assert.Equal(t, "null", string(d["payload"]))
			assert.Equal(t, empty.UUID, d.str(t, "uuid"))
			assert.Equal(t, []string{"payload", "type", "uuid"}, d.keys())
		}
	}
	listenWithID.requireDone()
	listenTypeOnly.requireDone()
	assert.Zero(t, pub.Stats().NoSubscribers+unstamped.Stats().NoSubscribers)
}

// (b) graphql-yoga's createPubSub publishes the payload alone; Go reads it
// with the RawJSONMarshaler, through a Subscriber and an EventTarget, on
// `topic:id` and plain topics.
func TestInterop_PubSubFromTypeScript(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	srv := redistest.Start(t)
	tap := interopNewTap(t, srv)
	raw := redispubsub.RawJSONMarshaler{}
	sub := interopSubscriber(t, srv, redispubsub.SubscriberConfig{Marshaler: raw})
	target := interopTarget(t, interopPublisher(t, srv, redispubsub.PublisherConfig{Marshaler: raw}), sub, nil)

	withID := interopSubscribe(t, sub, "call.responded:uuid-123")
	plain := interopSubscribe(t, sub, "user.created")
	withIDEvents := interopListen(t, target, "call.responded:uuid-123")
	plainEvents := interopListen(t, target, "user.created")

	interopRun(t, srv,
		[]string{"dispatch", "--mode", "pubsub", "--topic", "call.responded", "--id", "uuid-123", "--payload", interopPayloadWithID},
		[]string{"dispatch", "--mode", "pubsub", "--topic", "user.created", "--payload", interopPayloadType},
	)
	wire := tap.take(2)
	slices.SortFunc(wire, func(a, b interopWire) int { return strings.Compare(a.channel, b.channel) })
	assert.Equal(t, []interopWire{
		{"call.responded:uuid-123", interopPayloadWithID},
		{"user.created", interopPayloadType},
	}, wire, "createPubSub publishes JSON.stringify(payload) on topic:id or topic")

	for _, c := range []struct {
		ch      <-chan *message.Message
		events  <-chan interopEvent
		typ, id string
		payload string
		want    interopCall
	}{
		{withID, withIDEvents, "call.responded", "uuid-123", interopPayloadWithID, interopCall{OK: true, N: 1, Text: `é "q" <b>`}},
		{plain, plainEvents, "user.created", "", interopPayloadType, interopCall{N: 2}},
	} {
		msg := interopReceive(t, c.ch)
		assert.Equal(t, c.payload, string(msg.Payload))
		assert.Regexp(t, interopUUID, msg.UUID)
		assert.Empty(t, msg.Metadata)
		ev := interopNextEvent(t, c.events)
		assert.Equal(t, c.typ, ev.Type)
		assert.Equal(t, c.id, ev.ID)
		assert.Equal(t, c.want, ev.Payload)
	}
	stats := sub.Stats()
	assert.EqualValues(t, 2, stats.Received)
	assert.Zero(t, stats.DecodeFailures)
	assert.Zero(t, stats.Gaps)
}

// (b) Go publishes with the RawJSONMarshaler (Publisher and EventTarget);
// createPubSub's subscribe(topic, id) and subscribe(topic) get the payloads.
func TestInterop_PubSubToTypeScript(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	srv := redistest.Start(t)
	tap := interopNewTap(t, srv)
	listenWithID := interopStart(t, srv, "listen", "--mode", "pubsub", "--topic", "call.responded", "--id", "uuid-123",
		"--count", "2", "--timeout-ms", interopPeerTimeoutMs)
	listenPlain := interopStart(t, srv, "listen", "--mode", "pubsub", "--topic", "user.created",
		"--count", "2", "--timeout-ms", interopPeerTimeoutMs)
	raw := redispubsub.RawJSONMarshaler{}
	pub := interopPublisher(t, srv, redispubsub.PublisherConfig{Marshaler: raw})
	target := interopTarget(t, pub, interopSubscriber(t, srv, redispubsub.SubscriberConfig{Marshaler: raw}), nil)
	listenWithID.ready()
	listenPlain.ready()
	ctx := interopCtx(t)

	require.NoError(t, pub.Publish("call.responded:uuid-123",
		message.NewMessage(watermill.NewUUID(), []byte(`{"ok":true,"n":1}`))))
	require.NoError(t, target.DispatchEvent(ctx, interopEvent{Type: "call.responded", ID: "uuid-123", Payload: interopCall{OK: true, N: 2}}))
	require.NoError(t, pub.Publish("user.created",
		message.NewMessage(watermill.NewUUID(), []byte(`[1, "two", {"three": 3}]`))))
	require.NoError(t, target.DispatchEvent(ctx, interopEvent{Type: "user.created", Payload: interopCall{N: 4}}))

	assert.Equal(t, []interopWire{
		{"call.responded:uuid-123", `{"ok":true,"n":1}`},
		{"call.responded:uuid-123", `{"ok":true,"n":2}`},
		{"user.created", `[1, "two", {"three": 3}]`},
		{"user.created", `{"ok":false,"n":4}`},
	}, tap.take(4), "the raw JSON marshaler sends the payload as it is")

	assert.Equal(t, `{"payload":{"ok":true,"n":1}}`, listenWithID.next())
	assert.Equal(t, `{"payload":{"ok":true,"n":2}}`, listenWithID.next())
	assert.Equal(t, `{"payload":[1,"two",{"three":3}]}`, listenPlain.next())
	assert.Equal(t, `{"payload":{"ok":false,"n":4}}`, listenPlain.next())
	listenWithID.requireDone()
	listenPlain.requireDone()
}

// (c) A channel prefix on both sides: ChannelPrefix in Go, the event target
// wrapper of tests/interop/README.md in TypeScript; both formats, both
// directions, all on the channel "myapp:events:call.responded:uuid-123".
func TestInterop_ChannelPrefix(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	const (
		prefix  = "myapp:events:"
		topic   = "call.responded:uuid-123"
		channel = prefix + topic
	)
	srv := redistest.Start(t)
	tap := interopNewTap(t, srv)
	raw := redispubsub.RawJSONMarshaler{}
	envSub := interopSubscriber(t, srv, redispubsub.SubscriberConfig{ChannelPrefix: prefix})
	envPub := interopPublisher(t, srv, redispubsub.PublisherConfig{ChannelPrefix: prefix, DisableSequenceNumbers: true})
	envTarget := interopTarget(t, envPub, envSub, nil)
	rawSub := interopSubscriber(t, srv, redispubsub.SubscriberConfig{ChannelPrefix: prefix, Marshaler: raw})
	rawPub := interopPublisher(t, srv, redispubsub.PublisherConfig{ChannelPrefix: prefix, Marshaler: raw})
	rawTarget := interopTarget(t, rawPub, rawSub, nil)

	// TypeScript → Go, both formats. The Go Subscribers are both on the
	// channel: each decodes with its own marshaler, so each also gets the
	// other format's message: the envelope Subscriber takes createPubSub's
	// {"ok":true,"n":2} for an envelope without payload (null), and the raw
	// one gets the whole envelope as payload. Format and channel go together.
	envEvents := interopListen(t, envTarget, topic)
	rawEvents := interopListen(t, rawTarget, topic)
	interopRun(t, srv,
		[]string{"dispatch", "--mode", "eventtarget", "--prefix", prefix, "--topic", topic,
			"--detail", `{"type":"call.responded","id":"uuid-123","payload":{"ok":true,"n":1}}`},
	)
	interopRun(t, srv,
		[]string{"dispatch", "--mode", "pubsub", "--prefix", prefix, "--topic", "call.responded", "--id", "uuid-123",
			"--payload", `{"ok":true,"n":2}`},
	)
	assert.Equal(t, []interopWire{
		{channel, `{"type":"call.responded","id":"uuid-123","payload":{"ok":true,"n":1}}`},
		{channel, `{"ok":true,"n":2}`},
	}, tap.take(2))

	ev := interopNextEvent(t, envEvents)
	assert.Equal(t, interopEvent{Type: "call.responded", ID: "uuid-123", Payload: interopCall{OK: true, N: 1}},
		interopEvent{Type: ev.Type, ID: ev.ID, Payload: ev.Payload})
	ev = interopNextEvent(t, envEvents)
	assert.Equal(t, "null", string(ev.Message.Payload), "raw JSON read as an envelope: no payload member")

	ev = interopNextEvent(t, rawEvents)
	assert.JSONEq(t, `{"type":"call.responded","id":"uuid-123","payload":{"ok":true,"n":1}}`, string(ev.Message.Payload),
		"an envelope read as raw JSON is the whole object")
	ev = interopNextEvent(t, rawEvents)
	assert.Equal(t, interopEvent{Type: "call.responded", ID: "uuid-123", Payload: interopCall{OK: true, N: 2}},
		interopEvent{Type: ev.Type, ID: ev.ID, Payload: ev.Payload})

	// Go → TypeScript, both formats.
	listenEnv := interopStart(t, srv, "listen", "--mode", "eventtarget", "--prefix", prefix, "--topic", topic,
		"--count", "1", "--timeout-ms", interopPeerTimeoutMs)
	listenEnv.ready()
	ctx := interopCtx(t)
	require.NoError(t, envTarget.DispatchEvent(ctx, interopEvent{Type: "call.responded", ID: "uuid-123", Payload: interopCall{OK: true, N: 3}}))
	envWire := tap.take(1)[0]
	assert.Equal(t, channel, envWire.channel)
	d := interopTSEvent(t, listenEnv.next(), channel, envWire.body)
	assert.Equal(t, "call.responded", d.str(t, "type"), "the body's type has no prefix")
	assert.Equal(t, "uuid-123", d.str(t, "id"))
	assert.JSONEq(t, `{"ok":true,"n":3}`, string(d["payload"]))
	assert.Regexp(t, interopUUID, d.str(t, "uuid"))
	listenEnv.requireDone()

	// With no listener left on the channel, nobody must get the pubsub
	// payload as an envelope (a TypeScript listener that reads a channel
	// carries exactly one format; the Go Subscribers above both read this
	// one, which is fine for Go). End the Go listeners' subscriptions first,
	// so that the TypeScript pubsub listener is alone.
	require.NoError(t, envTarget.Close())
	require.NoError(t, rawTarget.Close())
	testutil.Eventually(t, func() bool { return testutil.Numsub(t, srv, channel) == 0 }, "the Go subscriptions to end")
	listenPubSub := interopStart(t, srv, "listen", "--mode", "pubsub", "--prefix", prefix, "--topic", "call.responded",
		"--id", "uuid-123", "--count", "1", "--timeout-ms", interopPeerTimeoutMs)
	listenPubSub.ready()
	require.NoError(t, rawPub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(`{"ok":true,"n":4}`))))
	assert.Equal(t, []interopWire{{channel, `{"ok":true,"n":4}`}}, tap.take(1))
	assert.Equal(t, `{"payload":{"ok":true,"n":4}}`, listenPubSub.next())
	listenPubSub.requireDone()

	for _, sub := range []*redispubsub.Subscriber{envSub, rawSub} {
		stats := sub.Stats()
		assert.Zero(t, stats.DecodeFailures)
		assert.Zero(t, stats.Gaps)
	}
}

// (d) What a TypeScript peer sends that Go cannot decode is counted in
// DecodeFailures and skipped; the subscriptions go on. TypeScript messages
// carry no sequence stamp and never count as gaps, also interleaved with
// stamped messages of a Go Publisher on the same channel.
func TestInterop_UndecodableFromTypeScript(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	const topic = "call.responded:uuid-123"
	srv := redistest.Start(t)
	tap := interopNewTap(t, srv)
	sub := interopSubscriber(t, srv, redispubsub.SubscriberConfig{})
	pub := interopPublisher(t, srv, redispubsub.PublisherConfig{})
	hookErrs := make(chan error, 16)
	target := interopTarget(t, pub, sub, hookErrs)
	msgs := interopSubscribe(t, sub, topic)
	events := interopListen(t, target, topic)
	rawSub := interopSubscriber(t, srv, redispubsub.SubscriberConfig{Marshaler: redispubsub.RawJSONMarshaler{}})
	rawMsgs := interopSubscribe(t, rawSub, "user.created")

	ctx := interopCtx(t)
	require.NoError(t, target.DispatchEvent(ctx, interopEvent{Type: "call.responded", ID: "uuid-123", Payload: interopCall{N: 1}}))
	tap.take(1)
	const (
		notJSON  = `not json {`
		badMeta  = `{"type":"call.responded","id":"uuid-123","payload":{"ok":true},"metadata":{"a":1}}`
		badType  = `{"type":"call.responded","id":"uuid-123","payload":{"ok":"yes","n":2}}`
		goodTS   = `{"type":"call.responded","id":"uuid-123","payload":{"ok":true,"n":3}}`
		goodRaw  = `{"ok":true,"n":5}`
		notJSON2 = `{"ok":tru`
	)
	// First, all at once: on the envelope channel a non-JSON body (PUBLISH
	// from ioredis), an envelope with a non-string metadata value and an
	// envelope whose payload does not fit the Go type; on the raw channel
	// truncated JSON. Then a good message on each.
	interopRun(t, srv,
		[]string{"raw", "--channel", topic, "--body", notJSON},
		[]string{"raw", "--channel", "user.created", "--body", notJSON2},
		[]string{"dispatch", "--mode", "eventtarget", "--topic", topic, "--detail", badMeta},
		[]string{"dispatch", "--mode", "eventtarget", "--topic", topic, "--detail", badType},
	)
	interopRun(t, srv,
		[]string{"dispatch", "--mode", "eventtarget", "--topic", topic, "--detail", goodTS},
		[]string{"dispatch", "--mode", "pubsub", "--topic", "user.created", "--payload", goodRaw},
	)
	require.NoError(t, target.DispatchEvent(ctx, interopEvent{Type: "call.responded", ID: "uuid-123", Payload: interopCall{N: 4}}))
	wire := tap.take(7)
	var onTopic []string
	for _, w := range wire {
		if w.channel == topic {
			onTopic = append(onTopic, w.body)
		}
	}
	require.Len(t, onTopic, 5)
	assert.ElementsMatch(t, []string{notJSON, badMeta, badType}, onTopic[:3])
	assert.Equal(t, goodTS, onTopic[3])

	// The Subscriber: the stamped n=1, the two TypeScript envelopes it can
	// decode (badType is a valid envelope; its payload is the EventTarget's
	// business), the stamped n=4.
	for _, want := range []string{`{"ok":false,"n":1}`, `{"ok":"yes","n":2}`, `{"ok":true,"n":3}`, `{"ok":false,"n":4}`} {
		assert.JSONEq(t, want, string(interopReceive(t, msgs).Payload))
	}
	// The EventTarget: badType is reported to its error hook, no listener runs.
	for _, want := range []int{1, 3, 4} {
		assert.Equal(t, want, interopNextEvent(t, events).Payload.N)
	}
	select {
	case err := <-hookErrs:
		assert.ErrorIs(t, err, redispubsub.ErrPayloadDecode)
	case <-time.After(interopTimeout):
		t.Fatal("no error reported for the payload that does not fit")
	}
	interopRequireNothing(t, hookErrs, "error hook call")
	interopRequireNothing(t, events, "event")

	assert.JSONEq(t, goodRaw, string(interopReceive(t, rawMsgs).Payload))

	stats := sub.Stats()
	t.Logf("envelope subscriber stats: %+v", stats)
	assert.EqualValues(t, 6, stats.Received)
	assert.EqualValues(t, 2, stats.DecodeFailures, "not json, and metadata {\"a\":1}")
	assert.Zero(t, stats.Gaps, "unstamped TypeScript messages between stamped ones are no gap")
	assert.Zero(t, stats.Dropped)
	rawStats := rawSub.Stats()
	t.Logf("raw subscriber stats: %+v", rawStats)
	assert.EqualValues(t, 2, rawStats.Received)
	assert.EqualValues(t, 1, rawStats.DecodeFailures)
	assert.Zero(t, rawStats.Gaps)
}

// What fails how on the TypeScript side, as the docs say: Go's raw JSON
// marshaler refuses to publish a payload that is not JSON (the default
// envelope carries it as base64, TestInterop_BinaryPayloadToTypeScript), so a
// Go peer cannot crash a TypeScript listener; a non-JSON body from elsewhere
// (here ioredis's PUBLISH) makes JSON.parse throw in ioredis's message
// handler and ends the TypeScript process.
func TestInterop_NonJSONCrashesTypeScriptListener(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	srv := redistest.Start(t)
	listener := interopStart(t, srv, "listen", "--mode", "eventtarget", "--topic", "fragile",
		"--count", "1", "--timeout-ms", interopPeerTimeoutMs)
	listener.ready()

	pub := interopPublisher(t, srv, redispubsub.PublisherConfig{Marshaler: redispubsub.RawJSONMarshaler{}})
	err := pub.Publish("fragile", message.NewMessage(watermill.NewUUID(), []byte("not json")))
	assert.ErrorIs(t, err, redispubsub.ErrPayloadNotJSON)
	assert.Zero(t, pub.Stats().Published)

	out := interopRun(t, srv, []string{"raw", "--channel", "fragile", "--body", "not json"})
	assert.Equal(t, []string{`{"receivers":1}`}, out[0])
	assert.Equal(t, 1, listener.wait(), "the listening TypeScript process dies")
	assert.Contains(t, listener.stderrText(), "SyntaxError")
	t.Logf("TypeScript listener's stderr: %s", strings.SplitN(listener.stderrText(), "\n", 2)[0])
}

// interopBinary is a payload that is not JSON: not UTF-8, and base64 with
// '+' and '/'.
var interopBinary = []byte{0x00, 0x01, 0x02, 0xfb, 0xff, 0xbf, 0x80, '"', '{'}

// The default envelope carries payloads that are not JSON to TypeScript: the
// listener gets valid JSON whose payload is the base64 string, marked by
// payload_encoding "base64", and Node's Buffer decodes the very bytes.
func TestInterop_BinaryPayloadToTypeScript(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	const topic = "file.uploaded:f-1"
	srv := redistest.Start(t)
	tap := interopNewTap(t, srv)
	listener := interopStart(t, srv, "listen", "--mode", "eventtarget", "--topic", topic,
		"--count", "3", "--timeout-ms", interopPeerTimeoutMs)
	pub := interopPublisher(t, srv, redispubsub.PublisherConfig{})
	listener.ready()

	msgs := []*message.Message{
		message.NewMessage(watermill.NewUUID(), interopBinary),
		message.NewMessage(watermill.NewUUID(), []byte("not json")), // what crashes a listener as a raw body
		message.NewMessage(watermill.NewUUID(), []byte(`{"ok":true}`)),
	}
	msgs[0].Metadata.Set("trace", "t-1")
	require.NoError(t, pub.Publish(topic, msgs...))

	wire := tap.take(len(msgs))
	pubID := interopStamp(t, wire[0].body, 1)
	since := interopSince(t, wire[0].body)
	sum := interopChannelSum(topic)
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	assert.Equal(t, []interopWire{
		{topic, `{"type":"file.uploaded","id":"f-1","payload":"` + b64(interopBinary) + `","payload_encoding":"base64","uuid":"` +
			msgs[0].UUID + `","metadata":{"rps_ch":"` + sum + `","rps_pub":"` + pubID + `","rps_seq":"1","rps_since":"` + since + `","trace":"t-1"}}`},
		{topic, `{"type":"file.uploaded","id":"f-1","payload":"` + b64([]byte("not json")) + `","payload_encoding":"base64","uuid":"` +
			msgs[1].UUID + `","metadata":{"rps_ch":"` + sum + `","rps_pub":"` + pubID + `","rps_seq":"2","rps_since":"` + since + `"}}`},
		{topic, `{"type":"file.uploaded","id":"f-1","payload":{"ok":true},"uuid":"` +
			msgs[2].UUID + `","metadata":{"rps_ch":"` + sum + `","rps_pub":"` + pubID + `","rps_seq":"3","rps_since":"` + since + `"}}`},
	}, wire, "Go's envelope bytes")

	for i, w := range wire[:2] {
		d, payloadHex := interopTSEventHex(t, listener.next(), topic, w.body)
		assert.Equal(t, b64(msgs[i].Payload), d.str(t, "payload"), "event %d", i)
		assert.Equal(t, "base64", d.str(t, "payload_encoding"), "event %d", i)
		assert.Equal(t, msgs[i].UUID, d.str(t, "uuid"), "event %d", i)
		require.NotNil(t, payloadHex, "event %d: the peer decoded no base64 payload", i)
		assert.Equal(t, hex.EncodeToString(msgs[i].Payload), *payloadHex, "event %d: Node's Buffer decodes the bytes", i)
	}
	d := interopTSEvent(t, listener.next(), topic, wire[2].body)
	assert.JSONEq(t, `{"ok":true}`, string(d["payload"]))
	assert.NotContains(t, d, "payload_encoding", "a JSON payload is embedded as it is")
	listener.requireDone()
}

// A TypeScript service sends bytes to Go as the base64 of its Buffer with
// payload_encoding "base64" (peer.mjs --payload-hex); the Go Subscriber
// delivers the very bytes.
func TestInterop_BinaryPayloadFromTypeScript(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	const topic = "file.uploaded:f-1"
	srv := redistest.Start(t)
	tap := interopNewTap(t, srv)
	sub := interopSubscriber(t, srv, redispubsub.SubscriberConfig{})
	msgs := interopSubscribe(t, sub, topic)
	textMsgs := interopSubscribe(t, sub, "note")

	interopRun(t, srv,
		[]string{"dispatch", "--mode", "eventtarget", "--topic", topic, "--payload-hex", hex.EncodeToString(interopBinary)},
	)
	interopRun(t, srv,
		[]string{"dispatch", "--mode", "eventtarget", "--topic", "note", "--payload-hex", hex.EncodeToString([]byte("x"))},
	)
	assert.Equal(t, []interopWire{
		{topic, `{"type":"file.uploaded","id":"f-1","payload":"` + base64.StdEncoding.EncodeToString(interopBinary) + `","payload_encoding":"base64"}`},
		{"note", `{"type":"note","payload":"eA==","payload_encoding":"base64"}`},
	}, tap.take(2), "JSON.stringify of the detail with Buffer's base64")

	msg := interopReceive(t, msgs)
	assert.Equal(t, interopBinary, []byte(msg.Payload))
	assert.Regexp(t, interopUUID, msg.UUID)
	assert.Empty(t, msg.Metadata)
	assert.Equal(t, "x", string(interopReceive(t, textMsgs).Payload))
	stats := sub.Stats()
	assert.EqualValues(t, 2, stats.Received)
	assert.Zero(t, stats.DecodeFailures)
}

// createPubSub queues at most 1024 events ahead of its consumer by default;
// with a larger repeaterBuffer (--buffer) a burst of 3000 events that Go
// publishes in one pipelined Publish arrives whole and in order.
func TestInterop_PubSubBurstWithBuffer(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	const n = 3000
	srv := redistest.Start(t)
	listener := interopStart(t, srv, "listen", "--mode", "pubsub", "--topic", "burst", "--count", strconv.Itoa(n),
		"--buffer", strconv.Itoa(2*n), "--timeout-ms", interopPeerTimeoutMs)
	pub := interopPublisher(t, srv, redispubsub.PublisherConfig{Marshaler: redispubsub.RawJSONMarshaler{}})
	listener.ready()

	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprintf(`{"n":%d}`, i)))
	}
	start := time.Now()
	require.NoError(t, pub.Publish("burst", msgs...))
	published := time.Since(start)
	for i := range n {
		line := listener.next()
		if line != fmt.Sprintf(`{"payload":{"n":%d}}`, i) {
			t.Fatalf("event %d: got %s", i, line)
		}
	}
	t.Logf("%d events: published in %v, all received by TypeScript after %v", n, published, time.Since(start))
	listener.requireDone()
	assert.Zero(t, pub.Stats().NoSubscribers)
}

// EventTarget.DispatchEvent does not escape '<', '>' and '&' in the payload
// (as encoding/json's json.Marshal would), so the body is what
// JSON.stringify writes.
func TestInterop_DispatchEventDoesNotEscapeHTML(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	srv := redistest.Start(t)
	tap := interopNewTap(t, srv)
	listener := interopStart(t, srv, "listen", "--mode", "eventtarget", "--topic", "html",
		"--count", "1", "--timeout-ms", interopPeerTimeoutMs)
	pub := interopPublisher(t, srv, redispubsub.PublisherConfig{DisableSequenceNumbers: true})
	target := interopTarget(t, pub, interopSubscriber(t, srv, redispubsub.SubscriberConfig{}), nil)
	listener.ready()
	require.NoError(t, target.DispatchEvent(interopCtx(t), interopEvent{Type: "html", Payload: interopCall{Text: "<b>&</b>"}}))
	w := tap.take(1)[0]
	d := interopTSEvent(t, listener.next(), "html", w.body) // fails: \u003cb\u003e\u0026 on the wire
	assert.JSONEq(t, `{"ok":false,"n":0,"text":"<b>&</b>"}`, string(d["payload"]))
	listener.requireDone()
}

// A TypeScript listener (createRedisEventTarget) receives what a Publisher
// with a History publishes, unaffected, and reads each message's position
// from detail.metadata: rps_offset 1, 2, 3 and one rps_epoch, the same a Go
// Subscriber reads (PositionOf).
func TestInterop_HistoryPositionToTypeScript(t *testing.T) {
	interopNeedNode(t)
	t.Parallel()
	srv := redistest.Start(t)
	const topic = "chat.message:room-1"
	listen := interopStart(t, srv, "listen", "--mode", "eventtarget", "--topic", topic,
		"--count", "3", "--timeout-ms", interopPeerTimeoutMs)
	pub := interopPublisher(t, srv, redispubsub.PublisherConfig{History: redispubsub.History{Size: 10}})
	sub := interopSubscriber(t, srv, redispubsub.SubscriberConfig{})
	ch, err := sub.Subscribe(interopCtx(t), topic)
	require.NoError(t, err)
	listen.ready()
	for i := 1; i <= 3; i++ {
		require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(`{"n":`+strconv.Itoa(i)+`}`))))
	}
	var epoch string
	for i := 1; i <= 3; i++ {
		msg := testutil.Receive(t, ch)
		pos, ok := redispubsub.PositionOf(msg)
		require.True(t, ok)
		msg.Ack()
		require.Equal(t, uint64(i), pos.Offset)

		var l interopTSLine
		require.NoError(t, json.Unmarshal([]byte(listen.next()), &l))
		var d interopDetail
		require.NoError(t, json.Unmarshal(l.Detail, &d))
		assert.JSONEq(t, `{"n":`+strconv.Itoa(i)+`}`, string(d["payload"]))
		var metadata map[string]string
		require.NoError(t, json.Unmarshal(d["metadata"], &metadata))
		assert.Equal(t, strconv.Itoa(i), metadata[redispubsub.MetadataOffset])
		assert.Equal(t, pos.Epoch, metadata[redispubsub.MetadataEpoch])
		if epoch == "" {
			epoch = pos.Epoch
		}
		assert.Equal(t, epoch, metadata[redispubsub.MetadataEpoch])
	}
	listen.requireDone()
}
