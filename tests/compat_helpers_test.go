package tests

//lint:file-ignore U1000 these names are used by tests/security_test.go, written on another branch

// The names below delegate to internal/testutil; they stay for
// security_test.go, written on another branch against them. New tests call
// testutil directly; once that file does too, this file goes.

import (
	"testing"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

const wmWaitTimeout = testutil.Timeout

var (
	wmReceive       = testutil.Receive
	wmRequireClosed = testutil.RequireClosed
	wmEventually    = testutil.Eventually
	wmNumsub        = testutil.Numsub
	wmSubscribe     = testutil.Subscribe
)

func wmWait[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return testutil.Wait(t, ch, what)
}

func faultPoll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, cond, what)
}
