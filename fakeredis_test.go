package redispubsub

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// fakeRedis is the other end of a Subscriber's sockets in the connection's
// unit tests: each dial is a net.Pipe whose server side the test drives,
// reading the commands the Subscriber writes and writing replies in any
// order it likes.
type fakeRedis struct {
	t     *testing.T
	conns chan *fakeConn
}

// newFakeSubscriber returns a Subscriber whose connection dials fakeRedis.
// The health check and the liveness probes are off unless configure sets
// them: a PING or a probe at a random moment would make the replies' order
// the clock's.
func newFakeSubscriber(t *testing.T, configure func(*SubscriberConfig)) (*Subscriber, *fakeRedis) {
	t.Helper()
	// An IP, not a name: go-redis (v9.22) resolves a host name in
	// NewClient, and a lookup that outlives its timeout leaves the
	// resolver's goroutines behind for goleak to find in a later test.
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"})
	config := SubscriberConfig{Client: client, HealthCheckInterval: time.Hour, ProbeInterval: -1}
	if configure != nil {
		configure(&config)
	}
	s, err := newSubscriber(config, nil)
	require.NoError(t, err)
	f := &fakeRedis{t: t, conns: make(chan *fakeConn)}
	s.start(f.dial)
	closeAtCleanup(t, s, func() {
		_ = client.Close()
	})
	return s, f
}

// closeAtCleanup closes s when the test ends (failing it when Close takes
// more than 10 s), then runs release and checks that no goroutine is left.
func closeAtCleanup(t *testing.T, s *Subscriber, release func()) {
	t.Helper()
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() {
			_ = s.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("Close did not return")
		}
		release()
		goleak.VerifyNone(t)
	})
}

func (f *fakeRedis) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	fc := &fakeConn{t: f.t, conn: server, r: bufio.NewReader(server)}
	select {
	case f.conns <- fc:
		return client, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// accept returns the next socket the Subscriber dials.
func (f *fakeRedis) accept() *fakeConn {
	f.t.Helper()
	select {
	case fc := <-f.conns:
		f.t.Cleanup(func() { _ = fc.conn.Close() })
		return fc
	case <-time.After(5 * time.Second):
		f.t.Fatal("the Subscriber did not dial")
		return nil
	}
}

// fakeConn is the server side of one socket.
type fakeConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// command reads the next command the Subscriber wrote.
func (fc *fakeConn) command() []string {
	fc.t.Helper()
	_ = fc.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line := fc.line()
	require.True(fc.t, strings.HasPrefix(line, "*"), "a command is an array: %q", line)
	n, err := strconv.Atoi(line[1:])
	require.NoError(fc.t, err)
	args := make([]string, n)
	for i := range args {
		header := fc.line()
		require.True(fc.t, strings.HasPrefix(header, "$"), "a command's argument is a bulk string: %q", header)
		size, err := strconv.Atoi(header[1:])
		require.NoError(fc.t, err)
		buf := make([]byte, size+2)
		_, err = io.ReadFull(fc.r, buf)
		require.NoError(fc.t, err)
		args[i] = string(buf[:size])
	}
	return args
}

func (fc *fakeConn) line() string {
	fc.t.Helper()
	line, err := fc.r.ReadString('\n')
	require.NoError(fc.t, err, "reading a command")
	return strings.TrimSuffix(line, "\r\n")
}

// expect reads the next command and checks it.
func (fc *fakeConn) expect(args ...string) {
	fc.t.Helper()
	require.Equal(fc.t, args, fc.command())
}

// send writes raw RESP.
func (fc *fakeConn) send(resp string) {
	fc.t.Helper()
	_ = fc.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := fc.conn.Write([]byte(resp))
	require.NoError(fc.t, err)
}

// closed waits until the Subscriber closed its end of the socket.
func (fc *fakeConn) closed() {
	fc.t.Helper()
	_ = fc.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := fc.r.ReadByte(); err != nil {
			var netErr net.Error
			require.False(fc.t, errors.As(err, &netErr) && netErr.Timeout(), "the Subscriber did not close the socket")
			return
		}
	}
}

// resp builds replies in RESP2 (arrays) or RESP3 (pushes).
type resp int

func (p resp) aggregate(n int) string {
	if p == 3 {
		return ">" + strconv.Itoa(n) + "\r\n"
	}
	return "*" + strconv.Itoa(n) + "\r\n"
}

func bulk(s string) string { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }

// confirm is the confirmation of kind ("subscribe", "unsubscribe", …) for
// name.
func (p resp) confirm(kind, name string, count int) string {
	return p.aggregate(3) + bulk(kind) + bulk(name) + ":" + strconv.Itoa(count) + "\r\n"
}

func (p resp) message(channel, body string) string {
	return p.aggregate(3) + bulk("message") + bulk(channel) + bulk(body)
}

func (p resp) pmessage(pattern, channel, body string) string {
	return p.aggregate(4) + bulk("pmessage") + bulk(pattern) + bulk(channel) + bulk(body)
}

func (p resp) pong() string {
	if p == 3 {
		return "+PONG\r\n"
	}
	return p.aggregate(2) + bulk("pong") + bulk("")
}

// envelope is the body of a JSON envelope with payload {"n":n}.
func envelope(topic string, n int) string {
	return fmt.Sprintf(`{"type":%q,"payload":{"n":%d}}`, topic, n)
}
