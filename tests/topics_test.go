package tests

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// 100,000 live topics on one Subscriber with the default configuration
// (10,000 under -race or -short), the README's one-channel-per-call pattern:
// subscribed from 1,000 goroutines at a time, each receiving its message,
// then all cancelled: Redis holds no subscription any more and no goroutine
// of theirs is left.
func TestHundredThousandTopics(t *testing.T) {
	n := 100_000
	if faultRaceEnabled() || testing.Short() {
		n = 10_000
	}
	const workers = 1000
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	topic := func(i int) string { return fmt.Sprintf("call.responded:%d", i) }
	// Warm up the connection and the publisher, then count goroutines.
	_, cancelWarm := wmSubscribe(t, sub, "warm")
	require.NoError(t, pub.Publish("warm", wmMessages(1, `{}`)...))
	cancelWarm()
	wmEventually(t, func() bool { return wmNumsub(t, srv, "warm") == 0 })
	baseline := runtime.NumGoroutine()

	chans := make([]<-chan *message.Message, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inParallel(t, n, workers, func(i int) error {
		ch, err := sub.Subscribe(ctx, topic(i))
		chans[i] = ch
		return err
	})
	inParallel(t, n, 64, func(i int) error {
		return pub.Publish(topic(i), message.NewMessage(fmt.Sprint(i), []byte(`{}`)))
	})
	inParallel(t, n, workers, func(i int) error {
		msg := wmReceive(t, chans[i])
		if msg.UUID != fmt.Sprint(i) {
			return fmt.Errorf("topic %d got message %s", i, msg.UUID)
		}
		msg.Ack()
		return nil
	})
	require.Zero(t, sub.Stats().Dropped)

	cancel()
	for _, ch := range chans {
		wmRequireClosed(t, ch)
	}
	wmEventually(t, func() bool {
		channels, _ := srv.Do(t, "PUBSUB", "CHANNELS", "call.responded:*").([]any)
		return len(channels) == 0
	}, "Redis still holds subscriptions")
	require.EqualValues(t, 0, wmNumsub(t, srv, topic(n-1)))
	if !assertEventuallyFewer(baseline) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left behind (baseline %d):\n%s", runtime.NumGoroutine()-baseline, baseline, buf[:runtime.Stack(buf, true)])
	}
}

// inParallel calls fn(i) for every i in [0, n) from workers goroutines, and
// fails the test with the first error.
func inParallel(t testing.TB, n, workers int, fn func(i int) error) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		next = make(chan int)
		errs = make(chan error, workers)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			t.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func assertEventuallyFewer(baseline int) bool {
	for range 200 {
		if runtime.NumGoroutine() <= baseline {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
