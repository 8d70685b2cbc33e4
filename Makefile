# Targets for what does not fit `go test` (see scripts/test.sh for the tests).

SOAK_DURATION ?= 10m
SOAK_FLAGS ?=
BENCH_FLAGS ?=
OTEL_BENCH_FLAGS ?= -benchtime 2s -rounds 3

.PHONY: soak bench bench-otel

# soak runs Publishers and Subscribers against a redis-server of its own,
# with periodic server kills and CLIENT KILLs, and prints rates, reconnects,
# gaps, drops and RSS: make soak SOAK_DURATION=1m SOAK_FLAGS="-kill-every 15s"
soak:
	go run ./cmd/soak -duration $(SOAK_DURATION) $(SOAK_FLAGS)

# bench measures the adapter side by side with raw go-redis, redisstream,
# watermill-nats (on a nats-server of its own, where one is installed),
# gochannel and the bare Ack hand-off on one redis-server of its own, a
# Watermill router with a 1 ms and a 10 ms handler on the adapter with
# MaxInFlight 1, 16 and 64 (and on gochannel), and classic against sharded
# Pub/Sub on a 3-master cluster of its own, in one run, and prints a markdown
# table with the ratios (progress on stderr), then the history rows (case
# "history": publishing with History, recovery, Redis memory per held
# message) beside centrifuge's Redis broker, which internal/bench/centrifuge
# (a module of its own) runs on the same server: make bench
# BENCH_FLAGS="-cases e2e-batch,latency -sizes 256 -duration 3s"; see
# go run ./cmd/benchtable -h.
bench:
	go run ./cmd/benchtable $(BENCH_FLAGS)
	$(MAKE) --no-print-directory bench-otel

# bench-otel measures what tracing costs (module otel, BenchmarkTracing):
# 256 B messages published in batches of 100 and handled by a router on a
# redis-server of its own, tracing off, on with OpenTelemetry's no-op
# TracerProvider, and on with the SDK exporting to an exporter that drops
# the spans, synchronously and batched; it prints the medians of the rounds
# and the ratio to off as a markdown table (go test's output on stderr):
# make bench-otel OTEL_BENCH_FLAGS="-benchtime 1s -rounds 5"
bench-otel:
	cd otel && go test -run '^$$' -bench '^BenchmarkTracing$$' . $(OTEL_BENCH_FLAGS) 2>&1 | awk -f bench.awk
