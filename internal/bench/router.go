package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// The router cases: a Watermill router whose one handler takes a fixed
// time per message (as one that waits on a database), on the adapter with
// SubscriberConfig.MaxInFlight 1, 16 and 64, and on gochannel, which has no
// such option.
const (
	// routerWindow is how many messages the publisher of a router case
	// stays ahead of the handler, on every system and row: twice the
	// largest MaxInFlight, so that a subscription always has messages
	// waiting for a slot, and few enough that the slowest row drains in
	// about a second.
	routerWindow = 128
	// routerBatch is the number of messages per Publish call.
	routerBatch = 16
	// routerSize is the payload size.
	routerSize = 256
)

// routerCases are the router cases: rows for MaxInFlight 1, 16 and 64 with
// a handler of 1 ms, and 1 and 64 with one of 10 ms, with the quotient of
// the two.
var routerCases = []*caseSpec{
	routerCase("router-1ms", time.Millisecond, []int{1, 16, 64}, false),
	routerCase("router-10ms", 10*time.Millisecond, []int{1, 64}, true),
}

// routerCase is a router case with a handler of delay, a row per
// MaxInFlight of inFlights, and, with quotient, a last row with the
// quotient of the last of them over the first.
func routerCase(id string, delay time.Duration, inFlights []int, quotient bool) *caseSpec {
	head := fmt.Sprintf("router, handler of %d ms", delay.Milliseconds())
	var metrics []metric
	for _, n := range inFlights {
		metrics = append(metrics, metric{
			name:  fmt.Sprintf("MaxInFlight %d msg/s", n),
			unit:  PerSecond,
			title: func(Config) string { return fmt.Sprintf("%s, MaxInFlight %d (msg/s)", head, n) },
		})
	}
	if quotient {
		last := inFlights[len(inFlights)-1]
		metrics = append(metrics, metric{
			name:     fmt.Sprintf("%d/%d", last, inFlights[0]),
			unit:     Ratio,
			noRatio:  true,
			quotient: &[2]int{len(inFlights) - 1, 0},
			title: func(Config) string {
				return fmt.Sprintf("%s: MaxInFlight %d / %d", head, last, inFlights[0])
			},
		})
	}
	return &caseSpec{
		id:      id,
		size:    routerSize,
		rounds:  true,
		systems: []string{sysAdapter, sysGoChannel},
		metrics: metrics,
		note:    routerNote,
		measureSystem: func(ctx context.Context, r *runner, s system, topic string, size int) ([]float64, error) {
			values, err := r.measureRouter(ctx, s, topic, size, delay, inFlights)
			if err != nil || !quotient {
				return values, err
			}
			return append(values, values[len(values)-1]/values[0]), nil
		},
	}
}

// routerNote explains the router cases.
func routerNote(Config) string {
	return fmt.Sprintf("*router*: a Watermill router (message.NewRouter, no middleware) with one handler that sleeps the "+
		"time given per message, on a Subscriber of its own; one goroutine publishes batches of %d, at most %d messages "+
		"ahead of the handler, until the round's time is over, and the rate counts until every message was handled. "+
		"The adapter: SubscriberConfig.MaxInFlight as the row says (1 is the default: the next message after the "+
		"Ack). gochannel has no such option: its Watermill default (Config{}) hands every message over at once, each on "+
		"a goroutine of its own that waits for its Ack, so the router runs a handler for every message published and "+
		"its figure is bounded by the %d messages ahead, in every row; it is measured once per round and shown in "+
		"each row. MaxInFlight 64 / 1: the quotient of the two rows above it.", routerBatch, routerWindow, routerWindow)
}

// measureRouter measures the router cases on s: on the adapter once per
// MaxInFlight of inFlights, each on a Publisher and Subscriber opened for
// it and a topic of its own; on another system once, with its default,
// for every row.
func (r *runner) measureRouter(ctx context.Context, s system, topic string, size int, delay time.Duration, inFlights []int) ([]float64, error) {
	measure := func(n int) (float64, error) {
		t, err := s.open(r.cfg, target{newClient: r.cfg.NewClient, maxInFlight: n})
		if err != nil {
			return 0, err
		}
		defer func() { _ = t.close() }()
		w, ok := t.(*wmTransport)
		if !ok {
			return 0, fmt.Errorf("%s is not a Watermill Pub/Sub", s.title)
		}
		res, err := r.throughputWithin(ctx, routerTransport{wmTransport: w, delay: delay},
			[]string{fmt.Sprintf("%s.%d", topic, n)}, size, 1, routerBatch, true, routerWindow)
		return res.rate, err
	}
	values := make([]float64, len(inFlights))
	if s.id != sysAdapter {
		v, err := measure(0)
		for i := range values {
			values[i] = v
		}
		return values, err
	}
	for i, n := range inFlights {
		v, err := measure(n)
		if err != nil {
			return nil, fmt.Errorf("MaxInFlight %d: %w", n, err)
		}
		values[i] = v
	}
	return values, nil
}

// routerTransport is a Watermill Pub/Sub consumed by a router whose
// handler sleeps delay per message.
type routerTransport struct {
	*wmTransport
	delay time.Duration
}

// consume runs a router with a handler per topic that sleeps delay and
// then calls onMsg (before the router Acks the message), and returns once
// the router runs. stop closes the router, which closes the Subscriber.
func (t routerTransport) consume(ctx context.Context, topics []string, onMsg func()) (func(), error) {
	router, err := message.NewRouter(message.RouterConfig{}, nil)
	if err != nil {
		return nil, err
	}
	for _, topic := range topics {
		router.AddConsumerHandler("bench-"+topic, t.name(topic), t.sub, func(*message.Message) error {
			time.Sleep(t.delay)
			onMsg()
			return nil
		})
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	stop := func() {
		_ = router.Close()
		cancel()
		<-done
	}
	select {
	case <-router.Running():
		return stop, nil
	case err := <-done:
		cancel()
		if err == nil {
			err = fmt.Errorf("the router stopped before it ran")
		}
		return nil, err
	}
}
