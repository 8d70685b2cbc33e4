package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBench runs a small bench on a harness server: a progress line per
// measurement, the table, and nothing left behind under its prefix.
func TestBench(t *testing.T) {
	srv := startRedis(t)
	r := runCLI(t, "", "bench", "-u", srv.url, "--prefix", "myapp:", "--sizes", "16", "--cases", "e2e-batch",
		"--systems", "go-redis,adapter,redisstream", "--duration", "50ms", "--rounds", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "redispubsub bench: measuring go-redis and adapter and redisstream on "+srv.url+", channels myapp:redispubsub-bench:")
	require.Contains(t, r.stderr, "\nbench 1/3 e2e-batch 16 B raw go-redis: msg/s ")
	require.Contains(t, r.stderr, "\nbench 3/3 e2e-batch 16 B redisstream: msg/s ")
	require.Contains(t, r.stdout, "| case | size | raw go-redis | adapter (envelope) | redisstream | adapter / raw |\n")
	require.Contains(t, r.stdout, "| end to end, batches of 100 (msg/s) | 16 B |")
	require.EqualValues(t, 0, srv.Do(t, "DBSIZE"), "the streams of redisstream deleted")
}

// TestBenchMaxTime: the run is bounded.
func TestBenchMaxTime(t *testing.T) {
	srv := startRedis(t)
	r := runCLI(t, "", "bench", "-u", srv.url, "--max-time", "1ms")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "redispubsub bench: stopped after --max-time 1ms; the table holds what was measured\n")
}
