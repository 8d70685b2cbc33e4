package redispubsubotel_test

// Traces between Go and TypeScript, for real: the Node peer of the core's
// interop tests (tests/interop/peer.mjs, with @opentelemetry/api, core and
// sdk-trace-base) continues a trace that Go started, and Go continues one
// that TypeScript started, through the envelope's metadata on one
// redis-server. The tests skip themselves when node or the peer's
// node_modules is missing: run npm ci in tests/interop, or scripts/test.sh.

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// peerDir is where the Node peer and its node_modules are.
var peerDir = filepath.Join("..", "tests", "interop")

// needPeer skips the test when the Node peer cannot run with tracing.
func needPeer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not found in PATH: the interop tests need Node.js 20+; run npm ci in tests/interop or scripts/test.sh")
	}
	for _, dir := range []string{"ioredis", "@graphql-yoga/redis-event-target", "@opentelemetry/api", "@opentelemetry/core", "@opentelemetry/sdk-trace-base"} {
		if _, err := os.Stat(filepath.Join(peerDir, "node_modules", dir)); err != nil {
			t.Skipf("tests/interop/node_modules/%s is missing: run npm ci in tests/interop or scripts/test.sh", dir)
		}
	}
}

// peer is one run of peer.mjs; lines has its stdout lines, closed at its
// end.
type peer struct {
	lines  chan string
	stderr testutil.Buffer
}

// startPeer runs `node peer.mjs args...` against srv until it ends, or is
// killed at the end of the test.
func startPeer(t *testing.T, srv *redistest.Server, args ...string) *peer {
	t.Helper()
	cmd := exec.Command("node", append([]string{"peer.mjs"}, args...)...)
	cmd.Dir = peerDir
	cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+srv.Addr())
	p := &peer{lines: make(chan string, 16)}
	cmd.Stderr = &p.stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("peer %v stderr:\n%s", args, p.stderr.String())
		}
	})
	return p
}

// next returns the peer's next line, failing the test when the peer ended
// first or nothing came within testutil.Timeout.
func (p *peer) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		if ok {
			return line
		}
	case <-time.After(testutil.Timeout):
	}
	t.Fatalf("no line from the peer; stderr:\n%s", p.stderr.String())
	return ""
}

// peerTrace is what the peer prints of a span: the trace it belongs to,
// and for a received event its parent's span id (null when the event
// carried no trace context).
type peerTrace struct {
	TraceID      string  `json:"traceId"`
	SpanID       string  `json:"spanId"`
	ParentSpanID *string `json:"parentSpanId"`
}

// Go → TypeScript: a message published through the traced Publisher, under
// a span of the service, reaches a TypeScript listener whose span (started
// from detail.metadata with the W3C propagator) has the Go producer span as
// its parent, in the same trace. The metadata carries the sequence stamp
// beside the trace context, untouched.
func TestInteropTraceGoToTypeScript(t *testing.T) {
	needPeer(t)
	t.Parallel()
	tracing, rec, tp := newTracing(t)
	srv := redistest.Start(t)
	plainPub, _ := pubSub(t, srv, nil)
	pub := tracing.Publisher(plainPub)

	const topic = "orders:o-1"
	listener := startPeer(t, srv, "listen", "--mode", "eventtarget", "--topic", topic, "--trace", "--count", "1")
	require.JSONEq(t, `{"ready":true}`, listener.next(t))

	ctx, request := startSpan(tp)
	msg := newMessage(`{"order":1}`)
	msg.SetContext(ctx)
	require.NoError(t, pub.Publish(topic, msg))
	request.End()

	var line struct {
		Detail struct {
			Metadata map[string]string `json:"metadata"`
		} `json:"detail"`
		Trace peerTrace `json:"trace"`
	}
	raw := listener.next(t)
	require.NoError(t, json.Unmarshal([]byte(raw), &line), raw)
	s := rec.next(2)
	send := s["send orders:{id}"]
	require.NotNil(t, send, "%v", names(s))
	requireChild(t, s["request"], send)
	assert.Equal(t, send.SpanContext().TraceID().String(), line.Trace.TraceID, "TypeScript's span is in Go's trace")
	require.NotNil(t, line.Trace.ParentSpanID, raw)
	assert.Equal(t, send.SpanContext().SpanID().String(), *line.Trace.ParentSpanID, "its parent is Go's producer span")
	assert.Contains(t, line.Detail.Metadata, "traceparent")
	for _, key := range []string{redispubsub.MetadataPublisher, redispubsub.MetadataSequence} {
		assert.Contains(t, line.Detail.Metadata, key, "the sequence stamp is still there")
	}
	assert.Equal(t, "1", line.Detail.Metadata[redispubsub.MetadataSequence])
}

// TypeScript → Go: an event that TypeScript dispatches inside a span of its
// own (its context injected into detail.metadata) is handled by a Go router
// handler and an EventTarget listener whose consumer spans are children of
// the TypeScript span, in its trace.
func TestInteropTraceTypeScriptToGo(t *testing.T) {
	needPeer(t)
	t.Parallel()
	tracing, rec, _ := newTracing(t)
	srv := redistest.Start(t)
	pub, sub := pubSub(t, srv, nil)

	handled := consumeSpans(t, tracing, sub, "orders")
	target, err := redispubsub.NewEventTarget[call](tracing.Publisher(pub), sub, tracing.EventTargetOption())
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, target.Close()) })
	_, err = target.AddEventListener(context.Background(), "orders", func(ctx context.Context, _ redispubsub.Event[call]) {
		handled <- trace.SpanContextFromContext(ctx)
	})
	require.NoError(t, err)

	dispatcher := startPeer(t, srv, "dispatch", "--mode", "eventtarget", "--topic", "orders", "--trace",
		"--detail", `{"type":"orders","payload":{"ok":true}}`)
	var line struct {
		Trace peerTrace `json:"trace"`
	}
	raw := dispatcher.next(t)
	require.NoError(t, json.Unmarshal([]byte(raw), &line), raw)
	for range 2 {
		sc := testutil.Wait(t, handled, "a Go consumer")
		assert.Equal(t, line.Trace.TraceID, sc.TraceID().String(), "Go's consumer span is in TypeScript's trace")
	}
	for range 2 {
		span := testutil.Wait(t, rec.ended, "a consumer span")
		assert.Equal(t, "process orders", span.Name())
		assert.Equal(t, line.Trace.TraceID, span.Parent().TraceID().String())
		assert.Equal(t, line.Trace.SpanID, span.Parent().SpanID().String(), "its parent is TypeScript's span")
		assert.True(t, span.Parent().IsRemote())
	}
	rec.none()
}
