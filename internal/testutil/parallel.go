package testutil

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// Parallel calls fn(i) for every i in [0, n) from up to workers goroutines
// (one at least) and returns once every call returned. When a call returns
// an error, the calls not started yet are not made and the test fails, on
// its own goroutine, with the first error. fn runs on other goroutines: it
// reports failures by its error and must not call t.FailNow (nor require).
// The wait is bounded by progress, not by its total time: the test fails
// when no call returns within Timeout.
func Parallel(t testing.TB, n, workers int, fn func(i int) error) {
	t.Helper()
	if err := TryParallel(n, workers, fn); err != nil {
		t.Fatal(err)
	}
}

// TryParallel is Parallel for a goroutine other than the test's: it returns
// the first error of fn, or an error when no call returned within Timeout
// (the calls still running are then left behind).
func TryParallel(n, workers int, fn func(i int) error) error {
	var (
		next     atomic.Int64
		failed   atomic.Bool
		returned atomic.Int64
		running  = min(max(workers, 1), n)
		results  = make(chan error, running)
		progress = make(chan struct{}, 1)
	)
	for range running {
		go func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					break
				}
				if err := fn(i); err != nil {
					failed.Store(true)
					results <- err
					return
				}
				returned.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
			results <- nil
		}()
	}
	stalled := time.NewTimer(Timeout)
	defer stalled.Stop()
	var first error
	for running > 0 {
		select {
		case err := <-results:
			running--
			if first == nil {
				first = err
			}
		case <-progress:
			stalled.Reset(Timeout)
		case <-stalled.C:
			return fmt.Errorf("parallel calls: none returned within %v; %d of %d returned", Timeout, returned.Load(), n)
		}
	}
	return first
}
