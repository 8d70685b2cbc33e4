package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// NewRouter returns a Watermill router that logs to the test (Logger) and
// waits up to Timeout for its handlers on Close; run it with RunRouter.
func NewRouter(t testing.TB) *message.Router {
	t.Helper()
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: Timeout}, Logger(t))
	if err != nil {
		t.Fatalf("new router: %v", err)
	}
	return r
}

// RunRouter runs r until the end of the test and returns once every
// handler has subscribed: what is published from then on reaches them. The
// router is closed at the end of the test (it closes its handlers'
// Subscribers and Publishers), and Run must then return nil.
func RunRouter(t testing.TB, r *message.Router) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close router: %v", err)
		}
		if err := Wait(t, done, "Run to return"); err != nil {
			t.Errorf("router Run: %v", err)
		}
	})
	select {
	case <-r.Running():
	case err := <-done:
		t.Fatalf("router stopped before running: %v", err)
	case <-time.After(Timeout):
		t.Fatalf("router not running within %v", Timeout)
	}
}
