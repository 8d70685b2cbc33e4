// Package tests holds the integration tests of redispubsub that need a real
// Redis: Watermill's universal Pub/Sub suite and its subscribe-first ports,
// Watermill routers with real middleware, and CQRS on top of the adapter.
// Every test starts its own redis-server with internal/redistest.
package tests

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when any goroutine is left once every test of the
// package has finished. It is the one TestMain of package tests: files added
// later (fault_test.go, bridge_test.go, ...) rely on it and must not declare
// another.
//
// go-redis's tryDial is let go: a client's pool that failed as many dials as
// it has connections (a test's client of a killed node) probes the node
// every second, and goes on for up to a second after Close. (The
// Subscriber's own dialing never starts one: see dialWith.)
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
