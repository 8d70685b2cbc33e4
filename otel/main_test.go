package redispubsubotel_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when any goroutine is left once every test of the
// package has finished. go-redis's tryDial is let go, as in the core's
// tests: a client's pool may probe a closed server for up to a second
// after Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
