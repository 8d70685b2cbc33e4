// Package bench measures this module's Publisher and Subscriber side by
// side with raw go-redis doing the same work on the same Redis server in the
// same run, with watermill-redisstream, watermill-nats on core NATS (on a
// nats-server that Run starts itself), Watermill's in-process gochannel and
// the bare Ack hand-off (the ceiling of Watermill's contract: no network,
// no codec) for reference, and prints the figures as one markdown table
// with the ratio adapter / raw go-redis.
//
// `make bench` (cmd/benchtable) runs it against a redis-server of its own,
// and the cluster case on a Redis Cluster of its own.
// It is written so that a command can run it against a user's Redis too:
// every channel and key it uses starts with Config.Prefix, every measurement
// is bounded in time, the streams that redisstream creates are deleted after
// each measurement, and everything it opens is closed before Run returns.
//
// It uses only the public API of the root package.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config says what Run measures and where. The zero value of every field but
// NewClient is a valid default.
type Config struct {
	// NewClient returns a new client of the Redis server under test. Run
	// calls it for every publisher and subscriber it opens, and closes what
	// it returns. Required.
	NewClient func() redis.UniversalClient

	// Prefix starts every channel and key that Run uses. Default:
	// "redispubsub-bench:<8 random hex digits>:".
	Prefix string

	// Sizes are the payload sizes in bytes, each at least 8 (a payload is a
	// JSON object of exactly that size, so that every marshaler takes it).
	// Default: 16, 256, 4096 and 65536.
	Sizes []int

	// Duration is how long each round of a throughput measurement
	// publishes; it then waits until everything published was received.
	// Default: 300ms.
	Duration time.Duration

	// Rounds is the number of rounds of each throughput measurement. The
	// systems take turns, round after round, so that a change in the load
	// of the machine falls on all of them; the table gives the median.
	// Default: 3.
	Rounds int

	// Batch is the number of messages per Publish call of the "e2e-batch"
	// and "publish" cases. Default: 100.
	Batch int

	// Publishers is the number of goroutines publishing single messages in
	// the "e2e-parallel" case. Default: 64.
	Publishers int

	// LatencySamples is the number of messages of the "latency" case, sent
	// one at a time, at most LatencyRate a second. Defaults: 1000 and 2000.
	LatencySamples, LatencyRate int

	// Topics is the number of topics of the "subscribe" case, subscribed
	// all at once. Default: 2000.
	Topics int

	// ManyTopics is the number of topics of the "subscribe-many" and
	// "eventtarget-many" cases, subscribed from SubscribeWorkers goroutines
	// at a time. Defaults: 100,000 and 1,000.
	ManyTopics, SubscribeWorkers int

	// NewClusterClient returns a new client of a Redis Cluster (Redis 7 or
	// later), on which the "cluster-publish" case runs: Run calls it for
	// every publisher and subscriber of that case, and closes what it
	// returns. nil: that case is not run, and a note under the table says
	// so.
	NewClusterClient func() *redis.ClusterClient

	// ClusterChannels is the number of channels of the "cluster-publish"
	// case, over which its Publishers goroutines publish. Default: 64.
	ClusterChannels int

	// Cases selects the cases to run by id (see CaseIDs), in the order of
	// CaseIDs. Default: all.
	Cases []string

	// Systems selects the columns by id (see SystemIDs), in the order of
	// SystemIDs. Default: all.
	Systems []string

	// NATSServer is the nats-server binary of the watermill-nats column
	// (system "nats"): a path, or a name looked up in PATH. When that column
	// is selected with a case it runs in, Run starts the server on a free
	// port of 127.0.0.1, core NATS only (JetStream off), and stops it before
	// it returns. When the binary is not found, the column's cells say "not
	// installed". Default: "nats-server".
	NATSServer string

	// Progress, when set, receives one line for every measurement as it
	// ends.
	Progress io.Writer

	// StallTimeout bounds how long a throughput or latency measurement may
	// go without any message before it is given up as failed. Default: 10s.
	StallTimeout time.Duration

	// SubscribeTimeout bounds each measurement of the subscribe cases, the
	// subscribing and the cleaning up. Default: 5m.
	SubscribeTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.Prefix = "redispubsub-bench:" + hex.EncodeToString(b[:]) + ":"
	}
	if c.Sizes == nil {
		c.Sizes = []int{16, 256, 4 << 10, 64 << 10}
	}
	setDefault(&c.Duration, 300*time.Millisecond)
	setDefault(&c.Rounds, 3)
	setDefault(&c.Batch, 100)
	setDefault(&c.Publishers, 64)
	setDefault(&c.LatencySamples, 1000)
	setDefault(&c.LatencyRate, 2000)
	setDefault(&c.Topics, 2000)
	setDefault(&c.ManyTopics, 100_000)
	setDefault(&c.SubscribeWorkers, 1000)
	setDefault(&c.ClusterChannels, 64)
	if c.Cases == nil {
		c.Cases = CaseIDs()
	}
	if c.Systems == nil {
		c.Systems = SystemIDs()
	}
	setDefault(&c.StallTimeout, 10*time.Second)
	setDefault(&c.SubscribeTimeout, 5*time.Minute)
}

func setDefault[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}

// validate reports what is wrong with a config whose defaults are set.
func (c *Config) validate() error {
	switch {
	case c.NewClient == nil:
		return errors.New("bench: Config.NewClient is required")
	case len(c.Sizes) == 0:
		return errors.New("bench: Config.Sizes is empty")
	case c.Duration < 0 || c.StallTimeout < 0 || c.SubscribeTimeout < 0:
		return errors.New("bench: durations must not be negative")
	case c.Rounds < 1 || c.Batch < 1 || c.Publishers < 1 || c.LatencySamples < 1 || c.LatencyRate < 1 ||
		c.Topics < 1 || c.ManyTopics < 1 || c.SubscribeWorkers < 1 || c.ClusterChannels < 1:
		return errors.New("bench: counts must be positive")
	}
	for _, s := range c.Sizes {
		if s < minSize {
			return fmt.Errorf("bench: payload size %d is below the minimum of %d", s, minSize)
		}
	}
	if err := known("case", c.Cases, CaseIDs()); err != nil {
		return err
	}
	return known("system", c.Systems, SystemIDs())
}

func known(what string, ids, all []string) error {
	for _, id := range ids {
		if !slices.Contains(all, id) {
			return fmt.Errorf("bench: unknown %s %q; known: %s", what, id, strings.Join(all, ", "))
		}
	}
	return nil
}

// Run runs the selected cases against every selected system and returns
// the report. A measurement that fails (a message lost for good, a
// subscription refused) is recorded in its cell and the run goes on. Run
// returns an error only when the config is invalid or the server does not
// answer (and then no report), or when ctx ends: then it returns ctx's
// error with the report of the measurements that were complete. Run leaves
// no goroutine, connection, key or process of its own behind (the
// nats-server it started is stopped on every return, and on Linux killed
// by the kernel if the process dies first).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	admin := cfg.NewClient()
	defer func() { _ = admin.Close() }()
	version, err := redisVersion(ctx, admin)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	started := time.Now()
	report := &Report{
		RedisVersion: version,
		GoVersion:    runtime.Version(),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		Started:      started,
		Duration:     cfg.Duration,
		Rounds:       cfg.Rounds,
		Systems:      selectedSystems(cfg.Systems),
	}
	r := &runner{cfg: cfg, admin: admin}
	if r.needs(sysNATS) {
		r.startNATS()
		if r.nats != nil {
			defer func() { _ = r.nats.close() }()
		}
	}
	if cfg.NewClusterClient != nil && NeedsCluster(cfg.Cases) {
		r.cluster = cfg.NewClusterClient()
		defer func() { _ = r.cluster.Close() }()
		if report.Cluster, err = clusterShape(ctx, r.cluster); err != nil {
			return nil, fmt.Errorf("bench: the cluster does not answer: %w", err)
		}
	}
	p := r.plan(report)
	rounds := make(map[*Row]map[string][]float64)
	for i, c := range p {
		values, err := r.measure(ctx, c)
		if ctxErr := ctx.Err(); ctxErr != nil {
			report.Elapsed = time.Since(started)
			return report, ctxErr
		}
		c.record(rounds, values, err)
		r.progress(i+1, len(p), c, values, err, started)
	}
	report.Elapsed = time.Since(started)
	return report, nil
}

// record puts the values of one round of c, or its error, in its rows:
// the median of the rounds so far, or the quotient of two such rows.
// rounds keeps the values of every round by row and system.
func (c cell) record(rounds map[*Row]map[string][]float64, values []float64, err error) {
	id := c.system.id
	for j, row := range c.rows {
		if rounds[row] == nil {
			rounds[row] = make(map[string][]float64)
		}
		switch {
		case row.Values[id].Err != nil: // an earlier round failed
		case err != nil:
			row.Values[id] = Value{Err: err}
		default:
			rounds[row][id] = append(rounds[row][id], values[j])
			row.Values[id] = Value{V: median(rounds[row][id])}
		}
	}
	for j, m := range c.spec.metrics {
		if q := m.quotient; q != nil && c.rows[j].Values[id].Err == nil {
			c.rows[j].Values[id] = Value{V: c.rows[q[0]].Values[id].V / c.rows[q[1]].Values[id].V}
		}
	}
}

// median returns the median of vs, which it sorts.
func median(vs []float64) float64 {
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// redisVersion returns the server's redis_version, proving it answers.
func redisVersion(ctx context.Context, c redis.UniversalClient) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("redis does not answer: %w", err)
	}
	if v, ok := infoField(info, "redis_version"); ok {
		return v, nil
	}
	return "unknown", nil
}

// infoField returns the value of field in the reply of INFO or CLUSTER
// INFO, "field:value" lines.
func infoField(info, field string) (string, bool) {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
			return v, true
		}
	}
	return "", false
}

// runner carries what the measurements of one Run share.
type runner struct {
	cfg   Config
	admin redis.UniversalClient
	// cluster is a client of Config.NewClusterClient's cluster, when a
	// cluster case runs; nil otherwise.
	cluster *redis.ClusterClient
	// nats is the run's nats-server, when the watermill-nats column has a
	// case to run and the server started; else natsErr says why not
	// (wrapping errNATSNotInstalled when there is no binary).
	nats    *natsServer
	natsErr error
}

// needs reports whether the system id is selected with a case it runs in.
func (r *runner) needs(id string) bool {
	i := slices.IndexFunc(systems, func(s system) bool { return s.id == id })
	if i < 0 || !slices.Contains(r.cfg.Systems, id) {
		return false
	}
	for _, spec := range cases {
		if slices.Contains(r.cfg.Cases, spec.id) && !spec.cluster {
			if runs, _ := systems[i].runs(spec); runs {
				return true
			}
		}
	}
	return false
}

// startNATS starts the run's nats-server, or sets natsErr.
func (r *runner) startNATS() {
	bin, err := findNATSServer(r.cfg.NATSServer)
	if err == nil {
		r.nats, err = startNATSServer(bin)
	}
	r.natsErr = err
}

// skipped returns the value of every cell of the system s when it cannot
// be measured in this run, and whether it cannot: "not installed", or the
// error that kept it from starting.
func (r *runner) skipped(s system) (Value, bool) {
	if s.id != sysNATS || r.natsErr == nil {
		return Value{}, false
	}
	if errors.Is(r.natsErr, errNATSNotInstalled) {
		return Value{Skipped: notInstalled}, true
	}
	return Value{Err: fmt.Errorf("nats-server: %w", r.natsErr)}, true
}

// cell is one measurement: a case, a payload size, a system and a round,
// giving one value for each of rows.
type cell struct {
	spec          *caseSpec
	size          int
	system        system
	round, rounds int // from 1
	rows          []*Row
}

// plan adds the report's rows, in table order, and returns the cells that
// fill them, in the order they run.
func (r *runner) plan(report *Report) []cell {
	var cells []cell
	var sysNotes []string // notes on the systems, after those on the cases
	for _, spec := range cases {
		if !slices.Contains(r.cfg.Cases, spec.id) {
			continue
		}
		if spec.cluster && r.cluster == nil {
			report.Notes = append(report.Notes, fmt.Sprintf("*%s*: not run: it needs a Redis Cluster, and none was given.", spec.id))
			continue
		}
		if spec.note != nil {
			if n := spec.note(r.cfg); !slices.Contains(report.Notes, n) {
				report.Notes = append(report.Notes, n)
			}
		}
		sizes := []int{spec.size}
		if spec.sized {
			sizes = r.cfg.Sizes
		}
		rows := make(map[int][]*Row, len(sizes))
		for _, m := range spec.metrics {
			for _, size := range sizes {
				row := &Row{Case: spec.id, Metric: m.name, Title: m.title(r.cfg), Size: size, Unit: m.unit, NoRatio: m.noRatio, Values: map[string]Value{}}
				report.Rows = append(report.Rows, row)
				rows[size] = append(rows[size], row)
			}
		}
		rounds := 1
		if spec.rounds {
			rounds = r.cfg.Rounds
		}
		var measured []system
		for _, sys := range systems {
			if !slices.Contains(r.cfg.Systems, sys.id) {
				continue
			}
			runs, na := sys.runs(spec)
			v, skip := r.skipped(sys)
			switch {
			case na:
				v, skip = Value{Skipped: notApplicable}, true
			case !runs:
				continue
			}
			if sys.note != nil {
				if n := sys.note(r); !slices.Contains(sysNotes, n) {
					sysNotes = append(sysNotes, n)
				}
			}
			if !skip {
				measured = append(measured, sys)
				continue
			}
			for _, size := range sizes {
				for _, row := range rows[size] {
					row.Values[sys.id] = v
				}
			}
		}
		for _, size := range sizes {
			for round := 1; round <= rounds; round++ {
				for _, sys := range measured {
					cells = append(cells, cell{spec: spec, size: size, system: sys, round: round, rounds: rounds, rows: rows[size]})
				}
			}
		}
	}
	report.Notes = append(report.Notes, sysNotes...)
	return cells
}

// measure runs one cell on a system opened for it alone, and deletes the
// key its topic may have made.
func (r *runner) measure(ctx context.Context, c cell) ([]float64, error) {
	topic := fmt.Sprintf("%s.%s.%d", c.spec.id, c.system.id, c.size)
	if c.spec.measureSystem != nil {
		runtime.GC()
		return c.spec.measureSystem(ctx, r, c.system, topic, c.size)
	}
	defer func() {
		// A stream of redisstream is a key; Pub/Sub channels are not.
		_ = r.admin.Del(context.WithoutCancel(ctx), r.cfg.Prefix+topic).Err()
	}()
	on := target{newClient: r.cfg.NewClient}
	if r.nats != nil {
		on.natsURL = r.nats.url
	}
	t, err := c.system.open(r.cfg, on)
	if err != nil {
		return nil, err
	}
	defer func() { _ = t.close() }()
	runtime.GC() // what the cells before left behind is not this one's cost
	return c.spec.measure(ctx, r, t, topic, c.size)
}

func (r *runner) progress(i, n int, c cell, values []float64, err error, started time.Time) {
	if r.cfg.Progress == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "bench %*d/%d %s", len(fmt.Sprint(n)), i, n, c.spec.id)
	if c.size > 0 {
		fmt.Fprintf(&b, " %s", formatSize(c.size))
	}
	fmt.Fprintf(&b, " %s", c.system.title)
	if c.rounds > 1 {
		fmt.Fprintf(&b, " (round %d/%d)", c.round, c.rounds)
	}
	b.WriteString(": ")
	if err != nil {
		fmt.Fprintf(&b, "FAILED: %v", err)
	} else {
		for j, row := range c.rows {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %s", row.Metric, row.Unit.format(values[j]))
		}
	}
	fmt.Fprintf(&b, " (%s elapsed)\n", time.Since(started).Round(time.Second))
	_, _ = io.WriteString(r.cfg.Progress, b.String())
}
