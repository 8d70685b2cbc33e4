package bench

import (
	"context"
	"fmt"
	"time"
)

// probesFast is the probe interval of the "probes on" row: 20 times the
// default's rate, so that what probes cost shows above the noise. (Not
// much faster: a probe waits behind the backlog Redis queued for the
// connection, and with 10 ms, whose probe has 5 ms to arrive, a backlog
// under this load made the connection falsely deaf.)
const probesFast = 250 * time.Millisecond

// probesCase measures what the Subscriber's liveness probes cost under
// load: end to end throughput with probes off and with a probe every
// probesFast, on a Publisher and Subscriber opened for each, in the same
// round, and their quotient.
var probesCase = &caseSpec{
	id:      "probes",
	size:    routerSize,
	rounds:  true,
	systems: []string{sysAdapter},
	metrics: []metric{
		{name: "off msg/s", unit: PerSecond, title: func(c Config) string {
			return fmt.Sprintf("end to end, batches of %d, liveness probes off (msg/s)", c.Batch)
		}},
		{name: "on msg/s", unit: PerSecond, title: func(c Config) string {
			return fmt.Sprintf("end to end, batches of %d, a probe every %v (msg/s)", c.Batch, probesFast)
		}},
		{name: "on/off", unit: Ratio, noRatio: true, quotient: &[2]int{1, 0}, title: func(Config) string {
			return "liveness probes: on / off"
		}},
	},
	note: func(c Config) string {
		return fmt.Sprintf("*liveness probes*: the end to end case (batches of %d) on a Subscriber with ProbeInterval "+
			"negative (off) and %v (20 times the default's rate of one PUBLISH per connection per 5 s), each on a "+
			"Publisher and Subscriber of its own, one after the other in each round; on / off is their quotient.",
			c.Batch, probesFast)
	},
	measureSystem: func(ctx context.Context, r *runner, s system, topic string, size int) ([]float64, error) {
		measure := func(interval time.Duration) (float64, error) {
			t, err := s.open(r.cfg, target{newClient: r.cfg.NewClient, probeInterval: interval})
			if err != nil {
				return 0, err
			}
			defer func() { _ = t.close() }()
			res, err := r.throughput(ctx, t, []string{fmt.Sprintf("%s.%d", topic, interval)}, size, 1, r.cfg.Batch, true)
			return res.rate, err
		}
		off, err := measure(-1)
		if err != nil {
			return nil, fmt.Errorf("probes off: %w", err)
		}
		on, err := measure(probesFast)
		if err != nil {
			return nil, fmt.Errorf("probes on: %w", err)
		}
		return []float64{off, on, on / off}, nil
	},
}
