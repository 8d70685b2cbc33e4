package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

const benchUsage = `Usage: redispubsub bench [flags]

Measures raw go-redis and the adapter side by side on your Redis, as make
bench does on a server of its own: end-to-end throughput, publish
throughput, latency and subscribe time, one progress line per measurement on
standard error, then the table with the ratio adapter / raw go-redis on
standard output. Every channel (and key) it uses starts with
PREFIX + "redispubsub-bench:<random>:", so it never touches your events; it
deletes what it created. Each measurement publishes for --duration; the run
stops after --max-time (or Ctrl-C) with the table of what was measured.
--systems picks the marshalers measured; --marshaler plays no part.

Flags:
`

const benchExample = `
Examples:
  redispubsub bench -u redis://redis.internal:6379
  redispubsub bench --sizes 256 --cases e2e-batch,latency --duration 3s
`

// defaultBenchCases leave out the cases that subscribe 100,000 topics.
const defaultBenchCases = "e2e-batch,e2e-parallel,publish,latency,subscribe"

// benchConfig is what the bench command asks of the benchmark.
type benchConfig struct {
	// NewClient returns a new client of the Redis under test; the benchmark
	// closes it.
	NewClient func() redis.UniversalClient
	// Prefix starts every channel and key of the benchmark.
	Prefix string
	// Sizes are the payload sizes in bytes.
	Sizes []int
	// Duration is how long each throughput measurement publishes.
	Duration time.Duration
	// Cases and Systems select rows and columns by id; nil: all.
	Cases, Systems []string
	// Progress receives a line per measurement as it ends.
	Progress io.Writer
}

// benchReport is the benchmark's outcome.
type benchReport interface {
	// WriteTable writes the markdown table with the ratio adapter / raw
	// go-redis.
	WriteTable(w io.Writer) error
	// Failed reports whether a measurement failed.
	Failed() bool
}

// benchRun runs the benchmark: internal/bench's Run. Like it, it returns a
// report of what was measured also when ctx ends first, with ctx's error.
// Nil until internal/bench is wired in (bench_run.go).
var benchRun func(ctx context.Context, cfg benchConfig) (benchReport, error)

func runBench(ctx context.Context, c *console, o options, args []string) int {
	fs := newFlagSet("redispubsub bench", benchUsage, benchExample)
	o.register(fs)
	sizes := fs.String("sizes", "256,4096", "payload sizes in bytes, comma-separated")
	cases := fs.String("cases", defaultBenchCases, "cases to run, comma-separated")
	systems := fs.String("systems", "go-redis,adapter", "columns, comma-separated: go-redis, adapter, adapter-rawjson, adapter-msgpack, redisstream, gochannel")
	duration := fs.Duration("duration", time.Second, "how long each throughput measurement publishes")
	maxTime := fs.Duration("max-time", 5*time.Minute, "bound of the whole run")
	pos, code := c.parse(fs, args, false)
	if code >= 0 {
		return code
	}
	cfg := benchConfig{Duration: *duration, Cases: split(*cases), Systems: split(*systems), Progress: c.stderr}
	var err error
	switch cfg.Sizes, err = parseSizes(*sizes); {
	case err != nil:
	case len(pos) > 0:
		err = fmt.Errorf("unexpected argument %q", pos[0])
	case *duration <= 0 || *maxTime <= 0:
		err = errors.New("--duration and --max-time must be positive")
	default:
		err = o.check()
	}
	if err != nil {
		return c.usageError(fs.Name(), err)
	}
	if benchRun == nil {
		fmt.Fprintf(c.stderr, "%s: not available in this build\n", fs.Name())
		return exitFail
	}
	client, err := o.connect(ctx) // a clear error before anything starts
	if err != nil {
		fmt.Fprintf(c.stderr, "%s: %v\n", fs.Name(), err)
		return exitFail
	}
	opts := client.Options()
	_ = client.Close()
	cfg.NewClient = func() redis.UniversalClient { return redis.NewClient(opts) }
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	cfg.Prefix = o.prefix + "redispubsub-bench:" + hex.EncodeToString(suffix[:]) + ":"
	fmt.Fprintf(c.stderr, "%s: measuring %s on %s, channels %s*, at most %v\n", fs.Name(), strings.Join(cfg.Systems, " and "), redact(o.url), cfg.Prefix, *maxTime)

	ctx, cancel := context.WithTimeout(ctx, *maxTime)
	defer cancel()
	rep, err := benchRun(ctx, cfg)
	if rep != nil {
		if werr := rep.WriteTable(c.stdout); werr != nil {
			fmt.Fprintf(c.stderr, "%s: %v\n", fs.Name(), werr)
			return exitFail
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(c.stderr, "%s: interrupted; the table holds what was measured\n", fs.Name())
		return exitFail
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(c.stderr, "%s: stopped after --max-time %v; the table holds what was measured\n", fs.Name(), *maxTime)
		return exitFail
	case err != nil:
		fmt.Fprintf(c.stderr, "%s: %v\n", fs.Name(), err)
		return exitFail
	case rep.Failed():
		fmt.Fprintf(c.stderr, "%s: a measurement failed; see the table\n", fs.Name())
		return exitFail
	}
	return exitOK
}

func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range split(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--sizes: %q is not a positive number", f)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// split splits a comma-separated list; "" gives nil.
func split(s string) []string {
	var parts []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return parts
}
