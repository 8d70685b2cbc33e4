package redisproc_test

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Without a Dir, Start makes one and Close removes it; after Close the
// server is gone for good.
func TestStartClose(t *testing.T) {
	t.Parallel()
	s, err := redisproc.Start(redisproc.Options{})
	require.NoError(t, err)
	assert.DirExists(t, s.Dir())
	assert.NotEqual(t, 6379, s.Port())
	v, err := s.Do(t.Context(), "PING")
	require.NoError(t, err)
	assert.Equal(t, "PONG", v)

	require.NoError(t, s.Kill())
	require.NoError(t, s.Restart())
	assert.True(t, s.Running())

	require.NoError(t, s.Close())
	assert.False(t, s.Running())
	assert.NoDirExists(t, s.Dir())
	_, err = net.DialTimeout("tcp", s.Addr(), time.Second)
	assert.Error(t, err, "port closed after Close")
	require.ErrorIs(t, s.Restart(), redisproc.ErrClosed)
	require.NoError(t, s.Close(), "Close again does nothing")
}

func TestStartNoBinary(t *testing.T) {
	t.Parallel()
	_, err := redisproc.Start(redisproc.Options{Binary: "/nonexistent/redis-server"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/nonexistent/redis-server")
}
