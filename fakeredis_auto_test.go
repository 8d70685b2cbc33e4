package redispubsub

import (
	"bufio"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// autoRedis answers a Subscriber's commands as Redis would (SUBSCRIBE and
// its kin, PING), on every socket the Subscriber dials, and lets a test
// publish, refuse channels and kill sockets. It keeps what each socket is
// subscribed to, as Redis does.
type autoRedis struct {
	t     *testing.T
	proto resp
	// refuse, when set, says whether Redis refuses a channel (NOPERM).
	refuse func(name string) bool

	mu    sync.Mutex
	conns []*autoConn
	dials int
}

type autoConn struct {
	srv    *autoRedis
	conn   net.Conn
	wmu    sync.Mutex
	mu     sync.Mutex
	subs   map[string]bool // "s:" channel, "p:" pattern, "S:" shard channel
	closed bool
}

func newAutoSubscriber(t *testing.T, proto resp, configure func(*SubscriberConfig)) (*Subscriber, *autoRedis) {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	config := SubscriberConfig{Client: client, HealthCheckInterval: time.Hour, ProbeInterval: -1,
		ReconnectBackoffMin: time.Millisecond, ReconnectBackoffMax: 5 * time.Millisecond}
	if configure != nil {
		configure(&config)
	}
	s, err := newSubscriber(config, nil)
	require.NoError(t, err)
	a := &autoRedis{t: t, proto: proto}
	s.start(a.dial)
	closeAtCleanup(t, s, func() {
		a.killAll()
		_ = client.Close()
	})
	return s, a
}

func (a *autoRedis) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	ac := &autoConn{srv: a, conn: server, subs: map[string]bool{}}
	a.mu.Lock()
	a.conns = append(a.conns, ac)
	a.dials++
	a.mu.Unlock()
	go ac.serve()
	return client, nil
}

func (a *autoRedis) current() *autoConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(a.conns) - 1; i >= 0; i-- {
		if !a.conns[i].isClosed() {
			return a.conns[i]
		}
	}
	return nil
}

func (a *autoRedis) killAll() {
	a.mu.Lock()
	conns := append([]*autoConn(nil), a.conns...)
	a.mu.Unlock()
	for _, ac := range conns {
		ac.kill()
	}
}

func (ac *autoConn) isClosed() bool {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return ac.closed
}

func (ac *autoConn) kill() {
	ac.mu.Lock()
	ac.closed = true
	ac.mu.Unlock()
	_ = ac.conn.Close()
}

func (ac *autoConn) write(s string) {
	ac.wmu.Lock()
	defer ac.wmu.Unlock()
	_ = ac.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = ac.conn.Write([]byte(s))
}

// subscribed returns what the socket is subscribed to.
func (ac *autoConn) subscribed() []string {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	var names []string
	for n := range ac.subs {
		names = append(names, n)
	}
	return names
}

// publish sends a message on channel to the socket if it is subscribed.
func (ac *autoConn) publish(channel, body string) bool {
	ac.mu.Lock()
	ok := ac.subs["s:"+channel]
	ac.mu.Unlock()
	if ok {
		ac.write(ac.srv.proto.message(channel, body))
	}
	return ok
}

func (ac *autoConn) serve() {
	defer ac.kill()
	r := bufio.NewReader(ac.conn)
	p := ac.srv.proto
	for {
		args, err := readCommand(r)
		if err != nil {
			return
		}
		var out strings.Builder
		name := strings.ToUpper(args[0])
		switch name {
		case "PING":
			out.WriteString(p.pong())
		case "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE":
			if ac.srv.refuse != nil {
				refused := false
				for _, n := range args[1:] {
					refused = refused || ac.srv.refuse(n)
				}
				if refused {
					out.WriteString("-NOPERM this user has no permissions to access one of the channels\r\n")
					break
				}
			}
			prefix := map[string]string{"SUBSCRIBE": "s:", "PSUBSCRIBE": "p:", "SSUBSCRIBE": "S:"}[name]
			ac.mu.Lock()
			for _, n := range args[1:] {
				ac.subs[prefix+n] = true
				out.WriteString(p.confirm(strings.ToLower(name), n, len(ac.subs)))
			}
			ac.mu.Unlock()
		case "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE":
			prefix := map[string]string{"UNSUBSCRIBE": "s:", "PUNSUBSCRIBE": "p:", "SUNSUBSCRIBE": "S:"}[name]
			ac.mu.Lock()
			for _, n := range args[1:] {
				delete(ac.subs, prefix+n)
				out.WriteString(p.confirm(strings.ToLower(name), n, len(ac.subs)))
			}
			ac.mu.Unlock()
		default:
			out.WriteString("-ERR unknown command\r\n")
		}
		ac.write(out.String())
	}
}

func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSuffix(line[1:], "\r\n"))
	if err != nil {
		return nil, err
	}
	args := make([]string, n)
	for i := range args {
		header, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSuffix(header[1:], "\r\n"))
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}
