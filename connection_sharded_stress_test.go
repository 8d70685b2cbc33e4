package redispubsub

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/hashslot"
)

// fakeCluster is a "cluster" of autoRedis-like nodes that answer sharded
// commands as Redis 7.0 does: MOVED for a channel of a slot the node does
// not own (SSUBSCRIBE and SUNSUBSCRIBE alike), and, when a slot migrates, a
// pushed "sunsubscribe" for each of its channels on every socket
// subscribed to one.
type fakeCluster struct {
	t     *testing.T
	mu    sync.Mutex
	owner map[string]string // channel -> node; nodes[0] by default
	nodes []string
	conns map[string][]*clusterConn
	s     *Subscriber
}

type clusterConn struct {
	fc   *fakeCluster
	node string
	conn net.Conn
	wmu  sync.Mutex
	subs map[string]bool // guarded by fc.mu
}

func (fc *fakeCluster) ownerOf(channel string) string {
	if o, ok := fc.owner[channel]; ok {
		return o
	}
	return fc.nodes[0]
}

func (fc *fakeCluster) dial(node string) dialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		client, server := net.Pipe()
		cc := &clusterConn{fc: fc, node: node, conn: server, subs: map[string]bool{}}
		fc.mu.Lock()
		fc.conns[node] = append(fc.conns[node], cc)
		fc.mu.Unlock()
		go cc.serve()
		return client, nil
	}
}

func (cc *clusterConn) write(s string) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	_ = cc.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = cc.conn.Write([]byte(s))
}

func (cc *clusterConn) serve() {
	defer cc.conn.Close()
	r := bufio.NewReader(cc.conn)
	p := resp(3)
	for {
		args, err := readCommand(r)
		if err != nil {
			return
		}
		var out strings.Builder
		name := strings.ToUpper(args[0])
		cc.fc.mu.Lock()
		switch name {
		case "PING":
			out.WriteString(p.pong())
		case "SSUBSCRIBE", "SUNSUBSCRIBE":
			if owner := cc.fc.ownerOf(args[1]); owner != cc.node {
				out.WriteString("-MOVED " + strconv.Itoa(hashslot.Of(args[1])) + " " + owner + "\r\n")
				break
			}
			for _, n := range args[1:] {
				if name == "SSUBSCRIBE" {
					cc.subs[n] = true
				} else {
					delete(cc.subs, n)
				}
				out.WriteString(p.confirm(strings.ToLower(name), n, len(cc.subs)))
			}
		default:
			out.WriteString("-ERR unknown command\r\n")
		}
		// Written under fc.mu, so that a migration's push is ordered with
		// the replies as Redis orders them.
		cc.write(out.String())
		cc.fc.mu.Unlock()
	}
}

// migrate moves channel's slot to node: the old owner pushes
// "sunsubscribe" to every socket subscribed to it.
func (fc *fakeCluster) migrate(channel, node string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	old := fc.ownerOf(channel)
	if old == node {
		return
	}
	fc.owner[channel] = node
	moveSlot(fc.s, channel, node)
	for _, cc := range fc.conns[old] {
		if cc.subs[channel] {
			delete(cc.subs, channel)
			cc.write(resp(3).confirm("sunsubscribe", channel, len(cc.subs)))
		}
	}
}

// held returns every (node, channel) still subscribed on an open socket.
func (fc *fakeCluster) held() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	var held []string
	for node, conns := range fc.conns {
		for _, cc := range conns {
			for ch := range cc.subs {
				held = append(held, node+"/"+ch)
			}
		}
	}
	return held
}

// Subscribes and cancels of a few sharded channels while their slots
// migrate between two nodes: no panic, every Subscribe returns, every
// output channel closes once its context ends, and at the end no node holds
// a subscription and no node connection stays open.
func TestStress_ShardedSubscribeCancelWithMigrations(t *testing.T) {
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, MaxRedirects: -1})
	s, err := newSubscriber(SubscriberConfig{Client: cluster, Sharded: true, HealthCheckInterval: time.Hour, ProbeInterval: -1,
		SubscribeTimeout: 10 * time.Second, ReconnectBackoffMin: time.Millisecond, ReconnectBackoffMax: 5 * time.Millisecond}, nil)
	require.NoError(t, err)
	fc := &fakeCluster{t: t, owner: map[string]string{}, nodes: []string{"a:1", "b:1"}, conns: map[string][]*clusterConn{}, s: s}
	s.slots = newSlotMap(cluster)
	s.slots.owners = make([]string, hashslot.Count)
	for i := range s.slots.owners {
		s.slots.owners[i] = "a:1"
	}
	s.dialNode = fc.dial
	closeAtCleanup(t, s, func() {
		_ = cluster.Close()
	})

	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(rand.IntN(2000)) * time.Microsecond):
			}
			fc.migrate(fmt.Sprintf("t%d", rand.IntN(6)), fc.nodes[rand.IntN(2)])
		}
	}()
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 30 {
				topic := fmt.Sprintf("t%d", rand.IntN(6))
				ctx, cancel := context.WithCancel(context.Background())
				out, err := s.Subscribe(ctx, topic)
				if err != nil {
					cancel()
					t.Errorf("Subscribe %s: %v", topic, err)
					return
				}
				time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
				cancel()
				awaitDrained(t, out, topic)
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	require.Eventually(t, func() bool { return len(fc.held()) == 0 }, 5*time.Second, 5*time.Millisecond,
		"still subscribed: %v", fc.held())
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 0
	}, 5*time.Second, 5*time.Millisecond, "node connections left open")
}
