package redistest

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// launch reports a port held by another server as errPortTaken, which makes
// Start try another port, and leaves no process behind.
func TestLaunchPortTaken(t *testing.T) {
	t.Parallel()
	a := Start(t)
	b := Start(t)
	b.Kill()
	b.mu.Lock()
	b.port = a.port
	err := b.launch()
	b.mu.Unlock()
	require.ErrorIs(t, err, errPortTaken)
	assert.False(t, b.Running())
	assert.Equal(t, "PONG", a.Do(t, "PING"), "the other server is untouched")
}

// A server that does not come up is reported with the tail of its output.
func TestLaunchBadOption(t *testing.T) {
	t.Parallel()
	s := Start(t)
	s.Kill()
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
