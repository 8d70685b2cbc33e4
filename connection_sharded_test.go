package redispubsub

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/hashslot"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// newFakeShardedSubscriber returns a Subscriber in sharded mode on a
// "cluster" whose nodes are fakeRedis servers: its slot map says every slot
// is owned by the first node until a test moves one (moveSlot); reloading
// the map fails (the cluster client reaches nothing), so the Subscriber
// moves channels by the map the test set.
func newFakeShardedSubscriber(t *testing.T, nodes ...string) (*Subscriber, map[string]*fakeRedis) {
	t.Helper()
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, MaxRedirects: -1})
	s, err := newSubscriber(SubscriberConfig{Client: cluster, Sharded: true, HealthCheckInterval: time.Hour, ProbeInterval: -1}, nil)
	require.NoError(t, err)
	fakes := map[string]*fakeRedis{}
	for _, node := range nodes {
		fakes[node] = &fakeRedis{t: t, conns: make(chan *fakeConn)}
	}
	s.slots = newSlotMap(cluster)
	s.slots.owners = make([]string, hashslot.Count)
	for i := range s.slots.owners {
		s.slots.owners[i] = nodes[0]
	}
	s.dialNode = func(node string) dialFunc { return fakes[node].dial }
	closeAtCleanup(t, s, func() {
		_ = cluster.Close()
	})
	return s, fakes
}

func moveSlot(s *Subscriber, channel, node string) {
	s.slots.mu.Lock()
	s.slots.owners[hashslot.Of(channel)] = node
	s.slots.mu.Unlock()
}

// A node connection whose every channel moved to another node (Redis ended
// them with SUNSUBSCRIBE: their slot migrated) carries nothing any more: it
// is closed, as one whose last subscription ended is. It stays open, with
// its goroutines and its health check, until Close.
func TestSharded_ConnectionLeftEmptyByAMoveIsClosed(t *testing.T) {
	s, fakes := newFakeShardedSubscriber(t, "a:1", "b:1")
	p := resp(3)
	done := subscribeAsync(context.Background(), s, "x")
	fa := fakes["a:1"].accept()
	fa.expect("SSUBSCRIBE", "x")
	fa.send(p.confirm("ssubscribe", "x", 1))
	out := subscribed(t, done)

	moveSlot(s, "x", "b:1")
	fa.send(p.confirm("sunsubscribe", "x", 0))
	fb := fakes["b:1"].accept()
	fb.expect("SSUBSCRIBE", "x")
	fb.send(p.confirm("ssubscribe", "x", 1))
	fb.send(p.aggregate(3) + bulk("smessage") + bulk("x") + bulk(envelope("x", 1)))
	require.Equal(t, `{"n":1}`, string(receive(t, out).Payload))

	fa.closed()
	s.mu.Lock()
	_, open := s.conns["a:1"]
	s.mu.Unlock()
	require.False(t, open, "the connection to a:1 is still in use")
}

// The same when the move is told by a MOVED reply to the SSUBSCRIBE.
func TestSharded_ConnectionLeftEmptyByMovedIsClosed(t *testing.T) {
	s, fakes := newFakeShardedSubscriber(t, "a:1", "b:1")
	p := resp(3)
	done := subscribeAsync(context.Background(), s, "x")
	fa := fakes["a:1"].accept()
	fa.expect("SSUBSCRIBE", "x")
	moveSlot(s, "x", "b:1")
	fa.send("-MOVED " + strconv.Itoa(hashslot.Of("x")) + " b:1\r\n")
	fb := fakes["b:1"].accept()
	fb.expect("SSUBSCRIBE", "x")
	fb.send(p.confirm("ssubscribe", "x", 1))
	subscribed(t, done)
	fa.closed()
}

var _ = context.Background

// In sharded mode a node connection closes once the UNSUBSCRIBE of its last
// channel is confirmed (connection.go's state diagram; connectionIdle), on a
// real cluster. (The bug: remove called connectionIdle right after queueing
// the UNSUBSCRIBE, when pending still held it, and nothing called it once
// it was confirmed: the connection, its two goroutines and its health-check
// PINGs stayed for good.)
func TestSharded_ConnectionLeftEmptyByUnsubscribeIsClosed(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	sub, err := NewSubscriber(SubscriberConfig{Client: cluster.NewClient(t), Sharded: true}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = testutil.Close(t, sub, "the Subscriber") })
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, "orders")
	require.NoError(t, err)
	cancel()
	testutil.RequireClosed(t, ch)
	testutil.Eventually(t, func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return len(sub.conns) == 0
	}, "the idle node connection was not closed")
}

// A channel moves to a node whose connection has an UNSUBSCRIBE of it
// queued and not written yet (the channel's last subscription there just
// ended). adopt's queue cancels that UNSUBSCRIBE, which keeps the channel
// subscribed in Redis, but writes neither a SUBSCRIBE nor a PING for the
// subscriptions that moved in: they stay "starting" and never receive a
// message again (until a reconnect).
func TestSharded_MoveOntoAQueuedUnsubscribeStarts(t *testing.T) {
	s, fakes := newFakeShardedSubscriber(t, "a:1", "b:1")
	p := resp(3)
	smessage := func(channel, body string) string {
		return p.aggregate(3) + bulk("smessage") + bulk(channel) + bulk(body)
	}
	// x's first subscription goes to a:1, its second, after the slot map
	// changed, to b:1.
	first := subscribeAsync(context.Background(), s, "x")
	fa := fakes["a:1"].accept()
	fa.expect("SSUBSCRIBE", "x")
	fa.send(p.confirm("ssubscribe", "x", 1))
	out := subscribed(t, first)

	moveSlot(s, "x", "b:1")
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan subscribeResult, 1)
	go func() {
		out, err := s.Subscribe(ctx, "x")
		second <- subscribeResult{out, err}
	}()
	fb := fakes["b:1"].accept()
	fb.expect("SSUBSCRIBE", "x")
	fb.send(p.confirm("ssubscribe", "x", 1))
	subscribed(t, second)

	// b:1's writer is held in a write nobody reads (net.Pipe), so that the
	// UNSUBSCRIBE of x stays queued.
	moveSlot(s, "z", "b:1")
	z := subscribeAsync(context.Background(), s, "z")
	b := s.conns["b:1"]
	waitFor(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.sess != nil && len(b.sess.sent) == 1
	})
	cancel()
	waitFor(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.sess != nil && len(b.sess.pending.ops) == 1
	})
	// Redis moves x's slot away from a:1: x's first subscription moves to
	// b:1.
	fa.send(p.confirm("sunsubscribe", "x", 0))
	waitFor(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		st := b.channels["x"]
		return st != nil && st.members() > 0
	})
	fb.expect("SSUBSCRIBE", "z")
	fb.send(p.confirm("ssubscribe", "z", 2))
	subscribed(t, z)
	// Whatever it writes for x (a SUBSCRIBE, or a PING to join the
	// subscription it kept), answered, x's first subscription receives.
	switch cmd := fb.command(); cmd[0] {
	case "PING":
		fb.send(p.pong())
	case "SSUBSCRIBE":
		require.Equal(t, []string{"SSUBSCRIBE", "x"}, cmd)
		fb.send(p.confirm("ssubscribe", "x", 2))
	default:
		t.Fatalf("unexpected %v", cmd)
	}
	fb.send(smessage("x", envelope("x", 1)))
	require.Equal(t, `{"n":1}`, string(receive(t, out).Payload))
}

// The last subscription of x ends and its SUNSUBSCRIBE is written while
// x's slot migrates away. Redis, deleting the slot, pushes "sunsubscribe x"
// (unsolicited), then answers the SUNSUBSCRIBE with MOVED (Redis 7.0.15
// answers SUNSUBSCRIBE of a channel of a slot it does not own with MOVED:
// checked on a real node). The push is taken as the SUNSUBSCRIBE's
// confirmation, so the MOVED answers nothing the connection knows of: it
// drops a healthy socket (every channel of the node resubscribed, gaps
// counted), or, when another command was written after the SUNSUBSCRIBE, is
// taken as that command's answer.
func TestSharded_UnsubscribeRacingASlotMigrationKeepsTheConnection(t *testing.T) {
	s, fakes := newFakeShardedSubscriber(t, "a:1", "b:1")
	p := resp(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan subscribeResult, 1)
	go func() {
		out, err := s.Subscribe(ctx, "x")
		done <- subscribeResult{out, err}
	}()
	fa := fakes["a:1"].accept()
	fa.expect("SSUBSCRIBE", "x")
	fa.send(p.confirm("ssubscribe", "x", 1))
	subscribed(t, done)
	// y keeps the connection to a:1 in use.
	ydone := subscribeAsync(context.Background(), s, "y")
	fa.expect("SSUBSCRIBE", "y")
	fa.send(p.confirm("ssubscribe", "y", 2))
	yout := subscribed(t, ydone)

	cancel()
	fa.expect("SUNSUBSCRIBE", "x")
	moveSlot(s, "x", "b:1")
	fa.send(p.confirm("sunsubscribe", "x", 1))                                      // pushed by the slot's deletion
	fa.send("-MOVED " + strconv.Itoa(hashslot.Of("x")) + " b:1\r\n")                // the answer to SUNSUBSCRIBE x
	fa.send(p.aggregate(3) + bulk("smessage") + bulk("y") + bulk(envelope("y", 1))) // the socket goes on
	require.Equal(t, `{"n":1}`, string(receive(t, yout).Payload))
	require.Zero(t, s.Stats().Reconnects)
	select {
	case <-fakes["a:1"].conns:
		t.Fatal("the connection to a:1 was dropped and dialed again")
	case <-time.After(100 * time.Millisecond):
	}
}

// moveTo takes the new owner's connection under the Subscriber's mu and
// calls adopt after releasing it; an idle node connection can be closed in
// between (closeIfIdle: its last channel just left, or, with the fix that
// closes a connection a move left empty, the channel's own old node when the
// slot map still names it). adopt on a closed connection ends the
// subscriptions that moved: their output channels close although nothing
// ended them and another connection could carry them (add, in the same
// case, reports false and its caller asks for a connection again).
func TestSharded_AdoptOnAClosedConnectionLeavesTheSubscriptions(t *testing.T) {
	s, fakes := newFakeShardedSubscriber(t, "a:1", "b:1")
	_ = fakes
	moveSlot(s, "x", "b:1")
	key := subscriptionKey{name: "x"}
	s.mu.Lock()
	b, err := s.connectionFor(key) // as moveTo does
	require.NoError(t, err)
	sn := newSubscription(s, key)
	sn.attach(context.Background())
	s.mu.Unlock()
	s.closeIfIdle(b) // b carries nothing
	require.True(t, b.isClosed())

	b.adopt(move{channel: "x", from: "a:1", sns: []*subscription{sn}})
	require.False(t, sn.isDone(), "the subscription ended although only the connection it was to move to closed")
	sn.end()
}
