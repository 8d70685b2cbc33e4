// Command benchtable measures this module's Publisher and Subscriber side
// by side with raw go-redis on one Redis server in one run, with
// watermill-redisstream, watermill-nats on core NATS (on a nats-server it
// starts itself, when one is installed), Watermill's gochannel and the bare
// Ack hand-off (the ceiling of Watermill's contract) for reference, a
// Watermill router with a slow handler on the adapter with MaxInFlight 1,
// 16 and 64, and classic against sharded Pub/Sub on a Redis Cluster of 3
// masters, and
// prints a markdown table with the ratio adapter / raw go-redis (see
// internal/bench). `make bench` runs it:
//
//	go run ./cmd/benchtable                        # a redis-server and a cluster of its own
//	go run ./cmd/benchtable -addr 127.0.0.1:6380   # a server you run; no cluster case
//	go run ./cmd/benchtable -cases e2e-batch,latency -sizes 256 -duration 3s
//	go run ./cmd/benchtable -cases cluster-publish
//
// The table goes to standard output, one progress line per measurement to
// standard error. It exits with status 1 when a measurement failed, 2 when
// it could not run.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/bench"
)

func main() {
	var (
		cfg     bench.Config
		addr    string
		sizes   string
		cases   string
		systems string
		// The history rows (case "history"): a table of their own.
		centrifugeDir string
		held          int
	)
	flag.StringVar(&addr, "addr", "", "host:port of the Redis to measure (default: start a redis-server of its own, and a cluster for cluster-publish, which -addr leaves out)")
	flag.StringVar(&cfg.Prefix, "prefix", "", "prefix of every channel and key (default: redispubsub-bench:<random>:)")
	flag.StringVar(&sizes, "sizes", "16,256,4096,65536", "payload sizes in bytes, comma-separated")
	flag.StringVar(&cases, "cases", "", "cases to run, comma-separated (default: all): "+strings.Join(append(bench.CaseIDs(), historyCase), ","))
	flag.StringVar(&systems, "systems", "", "columns, comma-separated (default: all): "+strings.Join(bench.SystemIDs(), ","))
	flag.DurationVar(&cfg.Duration, "duration", 0, "how long each round of a throughput measurement publishes (default 300ms)")
	flag.IntVar(&cfg.Rounds, "rounds", 0, "rounds of each throughput measurement, the systems taking turns; the table gives the median (default 3)")
	flag.IntVar(&cfg.Batch, "batch", 0, "messages per Publish call in e2e-batch and publish (default 100)")
	flag.IntVar(&cfg.Publishers, "publishers", 0, "goroutines of e2e-parallel and cluster-publish (default 64)")
	flag.IntVar(&cfg.ClusterChannels, "cluster-channels", 0, "channels of cluster-publish (default 64)")
	flag.IntVar(&cfg.LatencySamples, "latency-samples", 0, "messages of the latency case (default 1000)")
	flag.IntVar(&cfg.LatencyRate, "latency-rate", 0, "messages per second of the latency case (default 2000)")
	flag.IntVar(&cfg.Topics, "topics", 0, "topics of the subscribe case (default 2000)")
	flag.IntVar(&cfg.ManyTopics, "many-topics", 0, "topics of subscribe-many and eventtarget-many (default 100000)")
	flag.IntVar(&cfg.SubscribeWorkers, "workers", 0, "goroutines subscribing at a time in subscribe-many and eventtarget-many (default 1000)")
	flag.StringVar(&centrifugeDir, "centrifuge", "internal/bench/centrifuge", "directory of the history rows' anchor, centrifuge's Redis broker (a module of its own, run with go run); \"\" leaves it out")
	flag.IntVar(&held, "held", 10000, "history size of the history rows, and the messages their recovery reads")
	flag.StringVar(&cfg.NATSServer, "nats-server", "", "nats-server binary of the watermill-nats column, started on a free port for the run; its cells say \"not installed\" when it is not found (default: nats-server on PATH)")
	var cpuProfile, memProfile string
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	flag.StringVar(&memProfile, "memprofile", "", "write an allocation profile of the whole run to this file (go tool pprof -sample_index=alloc_space)")
	flag.Parse()

	var err error
	if cfg.Sizes, err = parseSizes(sizes); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(2)
	}
	cfg.Cases = split(cases)
	withHistory := len(cfg.Cases) == 0 || slices.Contains(cfg.Cases, historyCase)
	others := len(cfg.Cases) == 0 || slices.ContainsFunc(cfg.Cases, func(c string) bool { return c != historyCase })
	cfg.Cases = slices.DeleteFunc(cfg.Cases, func(c string) bool { return c == historyCase })
	cfg.Systems = split(systems)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var hist *bench.HistoryConfig
	if withHistory {
		hist = &bench.HistoryConfig{CentrifugeDir: centrifugeDir, Held: held, Size: 256}
	}
	code := profiled(cpuProfile, memProfile, func() int { return run(ctx, cfg, addr, others, hist) })
	stop()
	os.Exit(code)
}

// historyCase selects the history rows (bench.RunHistory) in -cases.
const historyCase = "history"

func run(ctx context.Context, cfg bench.Config, addr string, others bool, hist *bench.HistoryConfig) int {
	if addr == "" {
		var stop func()
		var err error
		if addr, stop, err = startOwn(&cfg, others); err != nil {
			fmt.Fprintln(os.Stderr, "benchtable:", err)
			return 2
		}
		defer stop()
	}
	cfg.NewClient = func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: addr}) }
	cfg.Progress = os.Stderr
	code := 0
	if others {
		code = runTable(ctx, cfg)
	}
	if hist != nil && ctx.Err() == nil {
		code = max(code, runHistory(ctx, cfg, addr, *hist))
	}
	return code
}

// runHistory measures and prints the history rows.
func runHistory(ctx context.Context, cfg bench.Config, addr string, hist bench.HistoryConfig) int {
	hist.Addr, hist.NewClient, hist.Progress = addr, cfg.NewClient, os.Stderr
	hist.Prefix = cfg.Prefix
	if hist.Prefix == "" {
		hist.Prefix = fmt.Sprintf("redispubsub-bench:h%d:", os.Getpid())
	}
	hist.Duration, hist.Rounds, hist.Publishers = cmp.Or(cfg.Duration, 300*time.Millisecond), cmp.Or(cfg.Rounds, 3), cmp.Or(cfg.Publishers, 64)
	rep, err := bench.RunHistory(ctx, hist)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		return 2
	}
	if err := rep.WriteTable(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		return 2
	}
	if rep.CentErr != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", rep.CentErr)
		return 1
	}
	return 0
}

// runTable measures and prints the main table.
func runTable(ctx context.Context, cfg bench.Config) int {
	rep, err := bench.Run(ctx, cfg)
	if rep != nil { // also when interrupted: what was measured
		if err := rep.WriteTable(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "benchtable:", err)
			return 2
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		return 2
	}
	for _, row := range rep.Rows {
		for _, v := range row.Values {
			if v.Err != nil {
				return 1
			}
		}
	}
	return 0
}

// profiled runs f, under the CPU profiler when cpu names a file, and writes
// an allocation profile to mem when it names one.
func profiled(cpu, mem string, f func() int) int {
	if cpu != "" {
		out, err := os.Create(cpu)
		if err == nil {
			err = pprof.StartCPUProfile(out)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchtable: -cpuprofile:", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = out.Close()
		}()
	}
	if mem != "" {
		runtime.MemProfileRate = 64 << 10
	}
	code := f()
	if mem != "" {
		out, err := os.Create(mem)
		if err == nil {
			err = pprof.Lookup("allocs").WriteTo(out, 0)
			_ = out.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchtable: -memprofile:", err)
			return 2
		}
	}
	return code
}

func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range split(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("-sizes: %q is not a number", f)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// split splits a comma-separated list; "" gives nil (the default).
func split(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}
