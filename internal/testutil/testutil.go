// Package testutil holds the helpers that the tests of this module share:
// bounded waits on channels, wait groups and conditions, parallel calls whose
// errors reach the test, what Redis says of a channel, test messages and a
// test logger.
//
// Every wait is bounded by Timeout, which only runs out when something hangs,
// and fails the test when it does. Every helper that takes a testing.TB must
// be called from the test's own goroutine, since it may call t.FailNow; the
// functions it is given (the conditions of Eventually, the calls of Parallel)
// may fail the test only when they run on that goroutine, as Eventually's
// conditions do and Parallel's calls do not.
package testutil

import "time"

// Timeout bounds every wait of the helpers; it only runs out when something
// hangs.
const Timeout = 20 * time.Second

// pollInterval is how often Eventually asks its condition.
const pollInterval = 5 * time.Millisecond
