package redispubsub

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// close stops taking hooks, and its channel is closed once every hook
// queued before it ran; a hook knows it is one, nobody else thinks so.
func TestHookRunnerCloseWaitsForEveryQueuedHook(t *testing.T) {
	h := newHookRunner()
	release := make(chan struct{})
	inside := make(chan bool, 1)
	var ran []int
	h.call(func() {
		inside <- h.inHook()
		<-release
		ran = append(ran, 1)
	})
	h.call(func() { ran = append(ran, 2) })
	require.True(t, testutil.Wait(t, inside, "the first hook"))
	require.False(t, h.inHook())

	done := h.close()
	h.call(func() { ran = append(ran, 3) }) // after close: dropped
	select {
	case <-done:
		t.Fatal("close's channel closed while a hook runs")
	default:
	}
	close(release)
	testutil.Wait(t, done, "the hooks")
	require.Equal(t, []int{1, 2}, ran)
	require.Equal(t, done, h.close(), "close is idempotent")
}

func TestHookRunnerClosedIdleIsDone(t *testing.T) {
	h := newHookRunner()
	testutil.Wait(t, h.close(), "an idle runner")
}
