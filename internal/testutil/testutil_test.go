package testutil_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a testing.TB whose failures are recorded; Fatal and FailNow
// end the goroutine that calls them, as the testing package does.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	failures []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// run runs fn with a recorder, on a goroutine of its own as a test runs, and
// returns the failures it recorded.
func run(t *testing.T, fn func(tb testing.TB)) []string {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	testutil.Wait(t, done, "the helper")
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failures
}

func TestReceive(t *testing.T) {
	ch := make(chan *message.Message, 1)
	ch <- message.NewMessage("m", nil)
	require.Equal(t, "m", testutil.Receive(t, ch).UUID)

	close(ch)
	require.Equal(t, []string{"output channel closed"}, run(t, func(tb testing.TB) { testutil.Receive(tb, ch) }))
}

func TestRequireClosedNacksWhatItGets(t *testing.T) {
	ch := make(chan *message.Message, 1)
	msg := message.NewMessage("m", nil)
	ch <- msg
	close(ch)
	testutil.RequireClosed(t, ch)
	testutil.Wait(t, msg.Nacked(), "the Nack")
}

func TestWait(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	require.Equal(t, 7, testutil.Wait(t, ch, "7"))
	close(ch)
	require.Zero(t, testutil.Wait(t, ch, "the close"))
}

func TestEventuallyCallsCondOnTheCallingGoroutine(t *testing.T) {
	calls := 0 // not synchronised: -race tells if cond runs elsewhere
	testutil.Eventually(t, func() bool {
		calls++
		return calls == 3
	})
	require.Equal(t, 3, calls)

	failures := run(t, func(tb testing.TB) {
		testutil.Eventually(tb, func() bool {
			tb.Fatal("cond failed")
			return false
		})
		tb.Errorf("Eventually went on after its condition failed the test")
	})
	require.Equal(t, []string{"cond failed"}, failures)
}

func TestParallel(t *testing.T) {
	var calls [100]atomic.Int32
	testutil.Parallel(t, len(calls), 7, func(i int) error {
		calls[i].Add(1)
		return nil
	})
	for i := range calls {
		require.EqualValues(t, 1, calls[i].Load(), "call %d", i)
	}

	var made atomic.Int32
	failures := run(t, func(tb testing.TB) {
		testutil.Parallel(tb, 1000, 1, func(i int) error {
			made.Add(1)
			return errors.New("broken")
		})
	})
	require.Equal(t, []string{"broken"}, failures)
	require.EqualValues(t, 1, made.Load(), "no call is made after one failed")
}

// closerFunc is an io.Closer.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func TestCloseReturnsCloseError(t *testing.T) {
	refused := errors.New("refused")
	require.ErrorIs(t, testutil.Close(t, closerFunc(func() error { return refused }), "the closer"), refused)
	require.NoError(t, testutil.Close(t, closerFunc(func() error { return nil }), "the closer"))
}

func TestBufferTakesConcurrentWrites(t *testing.T) {
	var b testutil.Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = b.Write([]byte("ab"))
				_ = b.String()
			}
		}()
	}
	testutil.WaitGroup(t, &wg, "the writers")
	require.Len(t, b.String(), 4*100*2)
}

func TestCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Timeout)
	defer cancel()
	c := testutil.StartCommand(t, exec.CommandContext(ctx, "sh", "-c", `echo out; echo err >&2; exec sleep 60`))
	c.WaitStdout(t, "out\n")
	c.WaitStderr(t, "err\n")
	c.Signal(t, syscall.SIGTERM)
	failures := run(t, func(tb testing.TB) { c.Wait(tb) })
	require.Len(t, failures, 1)
	require.Contains(t, failures[0], "killed")

	c = testutil.StartCommand(t, exec.CommandContext(ctx, "sh", "-c", "exit 3"))
	require.Equal(t, 3, c.Wait(t))
}

func TestWaitGroup(t *testing.T) {
	var wg sync.WaitGroup
	wg.Add(1)
	go wg.Done()
	testutil.WaitGroup(t, &wg, "the goroutine")
}

func TestNumsub(t *testing.T) {
	srv := redistest.Start(t)
	require.Zero(t, testutil.Numsub(t, srv, "ch"))
	ps := srv.NewClient(t).Subscribe(testutil.Context(t), "ch")
	defer ps.Close()
	_, err := ps.Receive(context.Background()) // the confirmation
	require.NoError(t, err)
	require.EqualValues(t, 1, testutil.Numsub(t, srv, "ch"))

	require.Zero(t, testutil.ShardNumsub(t, srv, "sh"))
	sps := srv.NewClient(t).SSubscribe(testutil.Context(t), "sh")
	defer sps.Close()
	_, err = sps.Receive(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 1, testutil.ShardNumsub(t, srv, "sh"))
}
