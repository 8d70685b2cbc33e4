package redistest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestBinary(t *testing.T) {
	t.Run("found", func(t *testing.T) {
		p, err := redistest.Binary()
		require.NoError(t, err)
		assert.True(t, filepath.IsAbs(p) || strings.Contains(p, "redis-server"), p)
	})
	t.Run("REDIS_SERVER honoured", func(t *testing.T) {
		p, err := redistest.Binary()
		require.NoError(t, err)
		t.Setenv(redistest.EnvBinary, p)
		got, err := redistest.Binary()
		require.NoError(t, err)
		assert.Equal(t, p, got)
	})
	t.Run("REDIS_SERVER missing", func(t *testing.T) {
		t.Setenv(redistest.EnvBinary, filepath.Join(t.TempDir(), "no-such-redis-server"))
		_, err := redistest.Binary()
		require.ErrorIs(t, err, redistest.ErrNoBinary)
		assert.Contains(t, err.Error(), "scripts/test.sh")
		assert.Contains(t, err.Error(), "apt-get install redis-server")
		assert.Contains(t, err.Error(), "no-such-redis-server")
	})
}

func TestStartPing(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	assert.Equal(t, fmt.Sprintf("127.0.0.1:%d", s.Port()), s.Addr())
	assert.NotEqual(t, 6379, s.Port())
	assert.True(t, s.Running())

	c := s.NewClient(t)
	require.NoError(t, c.Ping(ctx(t)).Err())
	assert.Equal(t, "PONG", s.Do(t, "PING"))
	assert.Nil(t, s.Do(t, "GET", "missing"))

	assert.FileExists(t, s.LogPath())
	assert.Equal(t, s.Dir(), filepath.Dir(s.LogPath()))
}

func TestStartArgs(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, "--client-output-buffer-limit", "pubsub 1mb 512kb 1")
	got := s.Do(t, "CONFIG", "GET", "client-output-buffer-limit")
	assert.Contains(t, fmt.Sprint(got), "pubsub 1048576 524288 1")
	assert.Equal(t, []any{"save", ""}, s.Do(t, "CONFIG", "GET", "save"))
	assert.Equal(t, []any{"appendonly", "no"}, s.Do(t, "CONFIG", "GET", "appendonly"))
}

func TestKillRestart(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.NewClient(t)
	require.NoError(t, c.Set(ctx(t), "k", "v", 0).Err())
	port := s.Port()

	s.Kill()
	assert.False(t, s.Running())
	_, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	require.Error(t, err, "port must be closed after Kill")

	s.Restart()
	assert.Equal(t, port, s.Port())
	assert.True(t, s.Running())
	require.NoError(t, c.Ping(ctx(t)).Err(), "the client reconnects to the same address")
	assert.ErrorIs(t, c.Get(ctx(t), "k").Err(), redis.Nil, "no persistence")

	s.Kill()
	s.Kill() // idempotent
	s.Restart()
	require.NoError(t, c.Ping(ctx(t)).Err())
}

func TestStopRestart(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	s.Stop()
	assert.False(t, s.Running())
	_, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	require.Error(t, err)
	s.Stop() // idempotent
	s.Restart()
	assert.Equal(t, "PONG", s.Do(t, "PING"))
}

func TestKillClients(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := s.NewClient(t)
	ps := c.Subscribe(ctx(t), "ch")
	t.Cleanup(func() { _ = ps.Close() })
	_, err := ps.Receive(ctx(t)) // the subscription confirmation
	require.NoError(t, err)
	assert.Equal(t, []any{"ch", int64(1)}, s.Do(t, "PUBSUB", "NUMSUB", "ch"))

	assert.Equal(t, int64(1), s.KillClients(t, "TYPE", "pubsub"))
	assert.Equal(t, int64(0), s.KillClients(t, "TYPE", "pubsub"))
}

func TestCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	require.Len(t, cl.Addrs(), 3)
	require.Len(t, cl.Nodes(), 3)

	c := cl.NewClient(t)
	// Keys chosen to land on different nodes.
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for _, k := range keys {
		require.NoError(t, c.Set(ctx(t), k, "v-"+k, 0).Err())
	}
	for _, k := range keys {
		v, err := c.Get(ctx(t), k).Result()
		require.NoError(t, err)
		assert.Equal(t, "v-"+k, v)
	}
	owners := 0
	for _, n := range cl.Nodes() {
		if n.Do(t, "DBSIZE").(int64) > 0 {
			owners++
		}
	}
	assert.Greater(t, owners, 1, "keys spread over several masters")

	// A killed and restarted node rejoins with its nodes.conf.
	n := cl.Nodes()[1]
	n.Kill()
	n.Restart()
	cl.WaitOK(t)
	for _, k := range keys {
		require.NoError(t, c.Set(ctx(t), k, "w-"+k, 0).Err())
	}
}

func TestClusterSingleNode(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 1)
	c := cl.NewClient(t)
	require.NoError(t, c.Set(ctx(t), "k", "v", 0).Err())
	assert.Equal(t, "v", c.Get(ctx(t), "k").Val())
}

// ping sends PING on a raw connection and reads the reply line.
func ping(c net.Conn, r *bufio.Reader, timeout time.Duration) (string, error) {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func TestProxy(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	p := redistest.NewProxy(t, s.Addr())

	conn, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	r := bufio.NewReader(conn)
	line, err := ping(conn, r, 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "+PONG\r\n", line)

	// A go-redis client through the proxy works too.
	pc := redis.NewClient(&redis.Options{Addr: p.Addr()})
	t.Cleanup(func() { _ = pc.Close() })
	require.NoError(t, pc.Ping(ctx(t)).Err())

	p.Blackhole()
	_, err = ping(conn, r, 200*time.Millisecond)
	var ne net.Error
	require.ErrorAs(t, err, &ne, "got %v", err)
	assert.True(t, ne.Timeout(), "silence, not EOF: %v", err)
	assert.False(t, errors.Is(err, io.EOF))

	// A connection made while blackholed is accepted and silent.
	conn2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn2.Close() })
	_, err = ping(conn2, bufio.NewReader(conn2), 200*time.Millisecond)
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout(), "silence, not EOF: %v", err)

	p.Resume()
	conn3, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn3.Close() })
	r3 := bufio.NewReader(conn3)
	line, err = ping(conn3, r3, 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "+PONG\r\n", line)

	// CloseConnections: the peer sees an EOF at once.
	p.CloseConnections()
	require.NoError(t, conn3.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = r3.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
	require.NoError(t, pc.Ping(ctx(t)).Err(), "go-redis reconnects through the proxy")
}

func TestProxyTargetDown(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	p := redistest.NewProxy(t, s.Addr())
	s.Kill()
	conn, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Read(make([]byte, 1))
	assert.Error(t, err, "the proxy closes a connection it cannot forward")
	var ne net.Error
	if errors.As(err, &ne) {
		assert.False(t, ne.Timeout(), "closed, not silent: %v", err)
	}
}

func TestNoStrayProcess(t *testing.T) {
	// Each Server's cleanup reaps its process: a child would show up as a
	// zombie or a live redis-server with this process as its parent.
	t.Run("start and clean up", func(t *testing.T) {
		s := redistest.Start(t)
		s.Kill()
		s.Restart()
	})
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	me := fmt.Sprint(os.Getpid())
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == me && strings.Contains(s[:i], "redis-server") {
			// Parallel tests are paused until this sequential one ends,
			// so no redis-server child may exist, live or zombie.
			t.Errorf("stray redis-server child (state %s): %s", f[0], s)
		}
	}
}
