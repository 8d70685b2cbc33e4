package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// chromiumNames are the executables the browser test looks for in PATH.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// interopDir holds the TypeScript peer of the interop tests.
const interopDir = "../../tests/interop"

// browserWait bounds each wait for the page; Chromium starts slowly on a
// loaded machine.
const browserWait = 30 * time.Second

// pageState is what the page records in window.sse.
type pageState struct {
	Opens    int `json:"opens"`
	Received []struct {
		LastEventID string            `json:"lastEventId"`
		Type        string            `json:"type"`
		ID          string            `json:"id"`
		Payload     json.RawMessage   `json:"payload"`
		Metadata    map[string]string `json:"metadata"`
	} `json:"received"`
	Notices []struct {
		Name string            `json:"name"`
		Data map[string]string `json:"data"`
	} `json:"notices"`
}

// trackingListener remembers the connections it accepted, so that the test
// can drop them all, as a server that goes away mid-stream does.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) dropAll() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
	n := len(l.conns)
	l.conns = nil
	return n
}

// TestBrowser opens the example's page in headless Chromium, on a real
// redis-server: the page's EventSource receives the example's own events,
// one published by a Go Publisher and one dispatched by the TypeScript peer
// (tests/interop); then the server drops every connection, the EventSource
// reconnects with Last-Event-ID and the stream resumes from the history
// without a gap or a duplicate. A screenshot of the page is saved in the
// test's temporary directory (its path is logged; set SSE_SCREENSHOT to a
// file name to keep a copy).
//
// It skips when no Chromium is in PATH (scripts/test.sh installs Debian's
// chromium when it runs as root); the TypeScript step is skipped, saying
// so, when node or the peer's packages are missing.
func TestBrowser(t *testing.T) {
	chromium := ""
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		t.Skipf("no Chromium in PATH (looked for %v): the browser test needs one; scripts/test.sh installs Debian's chromium when run as root", chromiumNames)
	}
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // the last cleanup: after the server's and Redis's

	srv := redistest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tl := &trackingListener{Listener: ln}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, tl, srv.NewClient(t), 150*time.Millisecond, testutil.Logger(t)) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, testutil.Wait(t, served, "the server to stop"))
	})
	base := "http://" + ln.Addr().String()

	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{
		Client: srv.NewClient(t), ChannelPrefix: prefix, History: redispubsub.History{Size: 1000},
	}, nil)
	require.NoError(t, err)
	defer pub.Close()

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // as root
		chromedp.WindowSize(1000, 760),
	)...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	started := time.Now()
	require.NoError(t, chromedp.Run(browser, chromedp.Navigate(base+"/")))
	t.Logf("Chromium (%s) opened %s in %v", chromium, base, time.Since(started).Round(time.Millisecond))

	waitFor := func(what, expr string) {
		t.Helper()
		var ok bool
		err := chromedp.Run(browser, chromedp.Poll(expr, &ok, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(browserWait)))
		require.NoError(t, err, "waiting for %s (%s)", what, expr)
	}
	state := func() pageState {
		t.Helper()
		var text string
		require.NoError(t, chromedp.Run(browser, chromedp.Evaluate(`JSON.stringify(window.sse)`, &text)))
		var s pageState
		require.NoError(t, json.Unmarshal([]byte(text), &s))
		return s
	}
	from := func(who string) string {
		return fmt.Sprintf(`window.sse.received.some(e => e.payload && e.payload.from === %q)`, who)
	}

	waitFor("the example's events", `window.sse.opens === 1 && window.sse.received.length >= 3`)

	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"from":"go-test"}`))
	require.NoError(t, pub.Publish(topic, msg))
	waitFor("the Go Publisher's event", from("go-test"))

	if reason := typeScriptPeerMissing(); reason != "" {
		t.Logf("SKIPPED the TypeScript step: %s", reason)
	} else {
		peer := exec.Command("node", "peer.mjs", "dispatch", "--mode", "eventtarget", "--prefix", prefix, "--topic", topic,
			"--detail", `{"type":"call.responded","id":"demo","payload":{"from":"typescript"}}`)
		peer.Dir = interopDir
		peer.Env = append(os.Environ(), "REDIS_URL=redis://"+srv.Addr())
		out, err := peer.CombinedOutput()
		require.NoError(t, err, "node peer.mjs dispatch: %s", out)
		waitFor("the TypeScript peer's event", from("typescript"))
	}

	before := state()
	lastID := before.Received[len(before.Received)-1].LastEventID
	t.Logf("dropping the connections (%d events received, Last-Event-ID %s)", len(before.Received), lastID)
	require.Positive(t, tl.dropAll())
	waitFor("the EventSource to reconnect", `window.sse.opens === 2`)
	waitFor("events after the reconnection", fmt.Sprintf(`window.sse.received.length >= %d`, len(before.Received)+8))

	// The offsets of the events with a position (all but the TypeScript
	// peer's, which is published without a history) follow each other
	// without a gap or a duplicate, across the reconnection.
	after := state()
	var offsets []uint64
	var epoch string
	for _, ev := range after.Received {
		assert.Equal(t, "call.responded", ev.Type)
		assert.Equal(t, "demo", ev.ID)
		if ev.Metadata[redispubsub.MetadataOffset] == "" {
			continue
		}
		offset, err := strconv.ParseUint(ev.Metadata[redispubsub.MetadataOffset], 10, 64)
		require.NoError(t, err)
		offsets = append(offsets, offset)
		epoch = ev.Metadata[redispubsub.MetadataEpoch]
		assert.Equal(t, redispubsub.Position{Offset: offset, Epoch: epoch}.String(), ev.LastEventID)
	}
	for i := 1; i < len(offsets); i++ {
		require.Equal(t, offsets[i-1]+1, offsets[i], "offsets received: %v", offsets)
	}
	assert.Empty(t, after.Notices, "no rps.lost, no rps.end")
	t.Logf("received %d events over 2 connections: offsets %d..%d of epoch %s without a gap; sources %v",
		len(after.Received), offsets[0], offsets[len(offsets)-1], epoch, sources(after))

	var shot []byte
	require.NoError(t, chromedp.Run(browser, chromedp.CaptureScreenshot(&shot)))
	path := filepath.Join(t.TempDir(), "sse-page.png")
	require.NoError(t, os.WriteFile(path, shot, 0o644))
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
	if keep := os.Getenv("SSE_SCREENSHOT"); keep != "" {
		require.NoError(t, os.WriteFile(keep, shot, 0o644))
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(shot))
	require.NoError(t, err, "the screenshot is a PNG")
	assert.GreaterOrEqual(t, cfg.Width, 500)
	assert.GreaterOrEqual(t, cfg.Height, 300)
	assert.Greater(t, len(shot), 10_000, "a page with text, not a blank image")

	cancelBrowser()
	cancelAlloc()
}

// sources counts the received events by their payload's "from".
func sources(s pageState) map[string]int {
	counts := map[string]int{}
	for _, ev := range s.Received {
		var p struct {
			From string `json:"from"`
		}
		_ = json.Unmarshal(ev.Payload, &p)
		counts[p.From]++
	}
	return counts
}

// typeScriptPeerMissing says why the TypeScript peer cannot run, or "".
func typeScriptPeerMissing() string {
	if _, err := exec.LookPath("node"); err != nil {
		return "node not found in PATH"
	}
	for _, dir := range []string{"node_modules/ioredis", "node_modules/@graphql-yoga/redis-event-target"} {
		if _, err := os.Stat(filepath.Join(interopDir, dir)); err != nil {
			return "tests/interop/" + dir + " is missing: run npm ci in tests/interop (scripts/test.sh does)"
		}
	}
	return ""
}
