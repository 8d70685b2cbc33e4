package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/bench"
)

const benchUsage = `Usage: redispubsub bench [flags]

Measures raw go-redis and the adapter side by side on your Redis, as make
bench does on a server of its own: end-to-end throughput, publish
throughput, latency and subscribe time, one progress line per measurement on
standard error, then the table with the ratio adapter / raw go-redis on
standard output. Every channel (and key) it uses starts with
PREFIX + "redispubsub-bench:<random>:", so it never touches your events; it
deletes what it created. A throughput measurement takes --rounds rounds of
--duration each (the table shows the median); the run stops after --max-time
(or Ctrl-C) with the table of what was measured.
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

func runBench(ctx context.Context, c *console, o options, args []string) int {
	fs := newFlagSet("redispubsub bench", benchUsage, benchExample)
	o.register(fs)
	sizes := fs.String("sizes", "256,4096", "payload sizes in bytes, comma-separated")
	cases := fs.String("cases", defaultBenchCases, "cases to run, comma-separated, of "+strings.Join(bench.CaseIDs(), ","))
	systems := fs.String("systems", "go-redis,adapter", "columns, comma-separated, of "+strings.Join(bench.SystemIDs(), ","))
	duration := fs.Duration("duration", 0, "how long each round of a throughput measurement publishes (0: 300ms)")
	rounds := fs.Int("rounds", 0, "rounds of each throughput measurement, the table shows the median (0: 3)")
	maxTime := fs.Duration("max-time", 5*time.Minute, "bound of the whole run")
	pos, code := c.parse(fs, args, false)
	if code >= 0 {
		return code
	}
	cfg := bench.Config{Duration: *duration, Rounds: *rounds, Cases: split(*cases), Systems: split(*systems), Progress: c.stderr}
	var err error
	switch cfg.Sizes, err = parseSizes(*sizes); {
	case err != nil:
	case len(pos) > 0:
		err = fmt.Errorf("unexpected argument %q", pos[0])
	case *duration < 0 || *rounds < 0 || *maxTime <= 0:
		err = errors.New("--duration and --rounds must not be negative, --max-time must be positive")
	default:
		err = o.check()
	}
	if err != nil {
		return c.usageError(fs.Name(), err)
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
	rep, err := bench.Run(ctx, cfg)
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
	case failed(rep):
		fmt.Fprintf(c.stderr, "%s: a measurement failed; see the table\n", fs.Name())
		return exitFail
	}
	return exitOK
}

// failed reports whether a measurement of rep failed.
func failed(rep *bench.Report) bool {
	for _, row := range rep.Rows {
		for _, v := range row.Values {
			if v.Err != nil {
				return true
			}
		}
	}
	return false
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
