package testutil

import (
	"strings"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

// Logger returns a logger that writes Info and Error logs to t.Log until the
// test's cleanups are over; later logs (from a goroutine that outlives the
// test by mistake) are dropped rather than panicking in t.Log. Call it before
// making what logs into it, so that its cleanup runs after theirs.
func Logger(t testing.TB) watermill.LoggerAdapter {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return watermill.NewStdLoggerWithOut(w, false, false)
}

type testWriter struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}
