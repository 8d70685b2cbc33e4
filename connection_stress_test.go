package redispubsub

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

// Subscribes and cancels of a few topics from many goroutines, joiners and
// refused channels among them, while sockets are killed: no panic, every
// Subscribe returns, every output channel closes once its context ends, and
// once everything ended Redis holds no subscription of the Subscriber's.
func TestStress_SubscribeCancelWithKills(t *testing.T) {
	for _, p := range []resp{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", p), func(t *testing.T) {
			s, a := newAutoSubscriber(t, p, func(c *SubscriberConfig) {
				c.SubscribeTimeout = 5 * time.Second
			})
			a.refuse = func(n string) bool { return strings.HasPrefix(n, "x") }
			stop := make(chan struct{})
			var killer sync.WaitGroup
			killer.Add(1)
			go func() {
				defer killer.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(rand.IntN(3000)) * time.Microsecond):
					}
					if ac := a.current(); ac != nil {
						ac.kill()
					}
				}
			}()
			var wg sync.WaitGroup
			var ok, failed atomic.Int64
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 40 {
						topic := fmt.Sprintf("t%d", rand.IntN(6))
						if (g+i)%7 == 0 {
							topic = "x" + topic
						}
						ctx, cancel := context.WithCancel(context.Background())
						if rand.IntN(3) == 0 {
							go func() {
								time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
								cancel()
							}()
						}
						out, err := s.Subscribe(ctx, topic)
						if err != nil {
							failed.Add(1)
							if !strings.HasPrefix(topic, "x") && ctx.Err() == nil {
								t.Errorf("Subscribe %s: %v", topic, err)
							}
							cancel()
							continue
						}
						ok.Add(1)
						time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
						cancel()
						awaitDrained(t, out, topic)
					}
				}()
			}
			wg.Wait()
			close(stop)
			killer.Wait()
			a.mu.Lock()
			t.Logf("subscribed %d, failed %d, dials %d", ok.Load(), failed.Load(), a.dials)
			a.mu.Unlock()
			c := s.conns[""]
			waitFor(t, func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.state == stateLive && c.empty() && a.current() != nil
			})
			ac := a.current()
			// The socket answered everything written: what Redis holds now
			// stays.
			require.Eventually(t, func() bool { return len(ac.subscribed()) == 0 }, 2*time.Second, time.Millisecond,
				"Redis still holds %v", ac.subscribed())
		})
	}
}

// drainMsgs Acks what out delivers until it closes.
// awaitDrained Acks what out still delivers and reports an error (from any
// goroutine) when out is not closed within 5 s of its context's end.
func awaitDrained[T interface{ Ack() bool }](t *testing.T, out <-chan T, what string) {
	select {
	case <-drainMsgs(out):
	case <-time.After(5 * time.Second):
		t.Errorf("output channel of %s not closed after its context ended", what)
	}
}

func drainMsgs[T interface{ Ack() bool }](out <-chan T) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for m := range out {
			m.Ack()
		}
		close(done)
	}()
	return done
}

// Messages flow while subscriptions come and go and sockets are killed;
// consumers Ack, Nack or walk away: no panic, no leak, and once everything
// ended the budget holds nothing.
func TestStress_DeliveryWithKills(t *testing.T) {
	for _, inFlight := range []int{1, 4} {
		t.Run(fmt.Sprintf("MaxInFlight%d", inFlight), func(t *testing.T) {
			s, a := newAutoSubscriber(t, 3, func(c *SubscriberConfig) {
				c.SubscribeTimeout = 5 * time.Second
				c.MaxInFlight = inFlight
				c.NackResendSleep = -1
				if inFlight > 1 {
					c.OrderingKey = func(msg *message.Message) string { return msg.Metadata.Get("k") }
				}
			})
			stop := make(chan struct{})
			var bg sync.WaitGroup
			bg.Add(2)
			go func() { // publisher
				defer bg.Done()
				for i := 0; ; i++ {
					if i%64 == 0 {
						time.Sleep(time.Millisecond)
					}
					select {
					case <-stop:
						return
					default:
					}
					if ac := a.current(); ac != nil {
						topic := fmt.Sprintf("t%d", i%4)
						ac.publish(topic, envelope(topic, i))
					}
				}
			}()
			go func() { // killer
				defer bg.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(rand.IntN(20)) * time.Millisecond):
					}
					if ac := a.current(); ac != nil {
						ac.kill()
					}
				}
			}()
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 8 {
						ctx, cancel := context.WithCancel(context.Background())
						out, err := s.Subscribe(ctx, fmt.Sprintf("t%d", g%4))
						if err != nil {
							cancel()
							t.Errorf("Subscribe: %v", err)
							return
						}
						n := rand.IntN(50)
						for i := 0; i < n; i++ {
							select {
							case msg, ok := <-out:
								if !ok {
									t.Error("closed early")
									cancel()
									return
								}
								switch rand.IntN(5) {
								case 0:
									msg.Nack()
								case 1: // walk away
								default:
									msg.Ack()
								}
							case <-time.After(50 * time.Millisecond):
							}
						}
						cancel()
						awaitDrained(t, out, "a subscription")
					}
				}()
			}
			wg.Wait()
			close(stop)
			bg.Wait()
			require.Eventually(t, func() bool { return s.Stats().BufferedBytes == 0 }, 5*time.Second, time.Millisecond,
				"budget holds %d", s.Stats().BufferedBytes)
			t.Logf("%+v", s.Stats())
		})
	}
}
