package redisproc

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.Dir = t.TempDir()
	s, err := Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// launch reports a port held by another server as errPortTaken, which makes
// Start try another port, and leaves no process behind.
func TestLaunchPortTaken(t *testing.T) {
	t.Parallel()
	a := start(t, Options{})
	b := start(t, Options{})
	require.NoError(t, b.Kill())
	b.mu.Lock()
	b.port = a.port
	err := b.launch()
	b.mu.Unlock()
	require.ErrorIs(t, err, errPortTaken)
	assert.False(t, b.Running())
	v, err := a.Do(t.Context(), "PING")
	require.NoError(t, err)
	assert.Equal(t, "PONG", v, "the other server is untouched")
}

// A server that does not come up is reported with the tail of its output.
func TestLaunchBadOption(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	require.NoError(t, s.Kill())
	s.mu.Lock()
	s.args = []string{"--no-such-option", "x"}
	err := s.launch()
	s.mu.Unlock()
	require.Error(t, err)
	assert.False(t, errors.Is(err, errPortTaken))
	t.Log(err)
	assert.Contains(t, err.Error(), "no-such-option")
	assert.False(t, s.Running())
}
