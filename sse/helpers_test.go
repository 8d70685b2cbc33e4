package sse_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
	"github.com/alkdev/watermill-redispubsub/sse"
)

// pipeListener is an in-process transport for a real http.Server: each Dial
// makes a net.Pipe whose server end Accept returns. It needs no file
// descriptor, so one process can hold tens of thousands of streams, and a
// pipe has no kernel buffer: a client that stops reading blocks the
// server's next write at once.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) Dial() (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// testServer is a real http.Server serving a handler on a pipeListener,
// closed at the end of the test.
type testServer struct {
	srv *http.Server
	l   *pipeListener
}

// startServer serves h, with h.Close registered for Shutdown and called at
// the end of the test.
func startServer(t testing.TB, h *sse.Handler) *testServer {
	return startHTTP(t, h, h.Close)
}

func startHTTP(t testing.TB, h http.Handler, closeHandler func() error) *testServer {
	t.Helper()
	ts := &testServer{srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, l: newPipeListener()}
	ts.srv.RegisterOnShutdown(func() { _ = closeHandler() })
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = ts.srv.Serve(ts.l)
	}()
	t.Cleanup(func() {
		_ = ts.srv.Close()
		_ = closeHandler()
		<-served
	})
	return ts
}

// event is one event as EventSource reads it.
type event struct {
	name, id, data string
}

// client is one request of the stream, read as EventSource does.
type client struct {
	t     testing.TB
	conn  net.Conn
	resp  *http.Response
	r     *bufio.Reader
	pings int
}

// get sends GET target with header and reads the response's head.
func (ts *testServer) get(t testing.TB, target string, header http.Header) *client {
	t.Helper()
	conn, err := ts.l.Dial()
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	c, err := request(conn, target, header, 4096)
	require.NoError(t, err)
	c.t = t
	return c
}

// request writes the request and reads the response's head from conn; the
// body is read through a buffer of bufSize bytes.
func request(conn net.Conn, target string, header http.Header, bufSize int) (*client, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: sse.test\r\nAccept: text/event-stream\r\n", target)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	_ = conn.SetDeadline(time.Now().Add(testutil.Timeout))
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(conn, bufSize)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return &client{conn: conn, resp: resp, r: bufio.NewReaderSize(resp.Body, bufSize)}, nil
}

// next returns the next event, skipping heartbeats (counted in pings). It
// fails the test on EOF or when none comes within testutil.Timeout.
func (c *client) next() event {
	c.t.Helper()
	ev, err := c.read()
	require.NoError(c.t, err, "reading the next event")
	return ev
}

// read returns the next event; io.EOF once the stream ended cleanly.
func (c *client) read() (event, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(testutil.Timeout))
	var ev event
	var data []string
	seen := false
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && line == "" && !seen {
				return event{}, io.EOF
			}
			return event{}, fmt.Errorf("read %q: %w", line, err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if !seen {
				continue
			}
			if data == nil && ev.name == "" {
				seen = false // a comment block: the heartbeat
				continue
			}
			ev.data = strings.Join(data, "\n")
			return ev, nil
		case line == ": ping":
			c.pings++
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		case strings.HasPrefix(line, "retry: "):
		default:
			return event{}, fmt.Errorf("unexpected line %q", line)
		}
		seen = true
	}
}

// requireEnd reads the final event of a stream the server ends, then EOF.
func (c *client) requireEnd(reason string) {
	c.t.Helper()
	ev := c.next()
	require.Equal(c.t, event{name: sse.EventEnd, data: `{"reason":"` + reason + `"}`}, ev)
	_, err := c.read()
	require.ErrorIs(c.t, err, io.EOF)
}

// redisPubSub starts a redis-server and returns a Publisher and a
// Subscriber on it, with their defaults, closed at the end of the test.
func redisPubSub(t testing.TB) (*redispubsub.Publisher, *redispubsub.Subscriber) {
	t.Helper()
	srv := redistest.Start(t)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	return pub, sub
}

// serveRedis serves a Handler of config over redisPubSub's Subscriber.
func serveRedis(t testing.TB, config sse.Config) (*redispubsub.Publisher, *redispubsub.Subscriber, *sse.Handler, *testServer) {
	t.Helper()
	pub, sub := redisPubSub(t)
	h, err := sse.NewHandler(sub, config)
	require.NoError(t, err)
	return pub, sub, h, startServer(t, h)
}

// allowAll is an Authorize that allows every topic.
func allowAll(*http.Request, []string) error { return nil }
