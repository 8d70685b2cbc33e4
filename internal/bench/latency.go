package bench

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// latencyWarmup is the number of round trips before the samples.
const latencyWarmup = 10

// latency publishes LatencySamples messages on topic, one at a time and at
// most LatencyRate a second, each after the previous one was received, and
// returns the median and the 99th percentile of the time from the call of
// Publish to the message's arrival at the consumer.
func (r *runner) latency(ctx context.Context, t transport, topic string, size int) (p50, p99 time.Duration, err error) {
	body := payload(size)
	arrived := make(chan time.Time, 1)
	stop, err := t.consume(ctx, []string{topic}, func() {
		select {
		case arrived <- time.Now():
		default: // not one at a time: the round trip below reports it
		}
	})
	if err != nil {
		return 0, 0, fmt.Errorf("subscribe: %w", err)
	}
	defer stop()

	timeout := time.NewTimer(r.cfg.StallTimeout)
	defer timeout.Stop()
	roundTrip := func() (time.Duration, error) {
		start := time.Now()
		if err := t.publish(ctx, topic, body, 1); err != nil {
			return 0, fmt.Errorf("publish: %w", err)
		}
		timeout.Reset(r.cfg.StallTimeout)
		select {
		case at := <-arrived:
			return at.Sub(start), nil
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-timeout.C:
			if d := t.diagnose(); d != "" {
				return 0, fmt.Errorf("no message within %v; %s", r.cfg.StallTimeout, d)
			}
			return 0, fmt.Errorf("no message within %v", r.cfg.StallTimeout)
		}
	}
	for range latencyWarmup {
		if _, err := roundTrip(); err != nil {
			return 0, 0, fmt.Errorf("warm-up: %w", err)
		}
	}
	tick := time.NewTicker(time.Second / time.Duration(r.cfg.LatencyRate))
	defer tick.Stop()
	samples := make([]time.Duration, 0, r.cfg.LatencySamples)
	for range r.cfg.LatencySamples {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
		d, err := roundTrip()
		if err != nil {
			return 0, 0, err
		}
		samples = append(samples, d)
	}
	slices.Sort(samples)
	return percentile(samples, 50), percentile(samples, 99), nil
}

// percentile returns the nearest-rank p-th percentile of sorted samples.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p+99)/100 - 1
	return sorted[max(i, 0)]
}
