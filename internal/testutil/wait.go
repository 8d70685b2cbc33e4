package testutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Receive returns the next message of ch, failing the test when ch is
// closed or nothing comes within Timeout. The message is neither Acked nor
// Nacked.
func Receive(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	msg, err := TryReceive(ch)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// TryReceive is Receive for a goroutine other than the test's: it returns an
// error when ch is closed or nothing comes within Timeout.
func TryReceive(ch <-chan *message.Message) (*message.Message, error) {
	timeout := time.NewTimer(Timeout)
	defer timeout.Stop()
	select {
	case msg, ok := <-ch:
		if !ok {
			return nil, errors.New("output channel closed")
		}
		return msg, nil
	case <-timeout.C:
		return nil, fmt.Errorf("no message within %v", Timeout)
	}
}

// RequireClosed waits until ch is closed, Nacking what it still sends, and
// fails the test when it is not closed within Timeout.
func RequireClosed(t testing.TB, ch <-chan *message.Message) {
	t.Helper()
	timeout := time.NewTimer(Timeout)
	defer timeout.Stop()
	for {
		select {
		case msg, ok := <-ch:
			if !ok {
				return
			}
			msg.Nack()
		case <-timeout.C:
			t.Fatalf("output channel not closed within %v", Timeout)
		}
	}
}

// Wait returns what ch sends first, or the zero value when ch is closed; it
// fails the test, naming what it waited for, when neither happens within
// Timeout.
func Wait[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timeout := time.NewTimer(Timeout)
	defer timeout.Stop()
	select {
	case v := <-ch:
		return v
	case <-timeout.C:
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// Send sends v on ch, failing the test, naming what the send is for, when
// nobody takes it within Timeout.
func Send[T any](t testing.TB, ch chan<- T, v T, what string) {
	t.Helper()
	timeout := time.NewTimer(Timeout)
	defer timeout.Stop()
	select {
	case ch <- v:
	case <-timeout.C:
		t.Fatalf("timed out sending %s", what)
	}
}

// WaitGroup waits until wg's counter is zero, failing the test, naming what
// it waited for, when that takes longer than Timeout.
func WaitGroup(t testing.TB, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	Wait(t, done, what)
}

// Close closes c on a goroutine of its own and returns Close's error,
// failing the test, naming what it closed, when Close has not returned
// within Timeout (a Close that hangs).
func Close(t testing.TB, c io.Closer, what string) error {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	return Wait(t, closed, "Close of "+what)
}

// Eventually calls cond on the calling goroutine, every few milliseconds,
// until it returns true, and fails the test when it has not within Timeout;
// msgAndArgs, a format and its arguments, say what was waited for. Unlike
// testify's Eventually, cond runs on the test's goroutine: it may fail the
// test, and it adds no goroutine of its own to the ones a test counts.
func Eventually(t testing.TB, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	EventuallyWithin(t, Timeout, cond, msgAndArgs...)
}

// EventuallyWithin is Eventually bounded by timeout instead of Timeout, for
// a wait that may take longer when nothing hangs (a test of 100,000 topics).
func EventuallyWithin(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v%s", timeout, describe(msgAndArgs))
		}
		<-ticker.C
	}
}

// GoroutinesAtMost waits until the process runs at most n goroutines, and
// fails the test with every goroutine's stack when it does not within
// Timeout.
func GoroutinesAtMost(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left after %v (at most %d expected):\n%s",
				runtime.NumGoroutine(), Timeout, n, buf[:runtime.Stack(buf, true)])
		}
		<-ticker.C
	}
}

// Context returns a context that ends after Timeout or at the end of the
// test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// describe formats testify-style msgAndArgs as ": message", or "" for none.
func describe(msgAndArgs []any) string {
	switch {
	case len(msgAndArgs) == 0:
		return ""
	case len(msgAndArgs) == 1:
		return ": " + fmt.Sprint(msgAndArgs[0])
	}
	if format, ok := msgAndArgs[0].(string); ok {
		return ": " + fmt.Sprintf(format, msgAndArgs[1:]...)
	}
	return ": " + fmt.Sprint(msgAndArgs...)
}
