package bench

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteTable(t *testing.T) {
	rep := &Report{
		Systems: []System{{"go-redis", "raw go-redis"}, {"adapter", "adapter (envelope)"}, {"redisstream", "redisstream"}, {"gochannel", "gochannel"}},
		Rows: []*Row{
			{Title: "end to end (msg/s)", Size: 16, Unit: PerSecond, Values: map[string]Value{
				"go-redis": {V: 300000.4}, "adapter": {V: 150000}, "gochannel": {V: 1234567},
			}},
			{Title: "end to end (msg/s)", Size: 64 << 10, Unit: PerSecond, Values: map[string]Value{
				"go-redis": {V: 9000}, "adapter": {Err: errors.New("lost 3")}, "gochannel": {V: 8000},
			}},
			{Title: "latency p50", Size: 256, Unit: Seconds, Values: map[string]Value{
				"go-redis": {V: 85.26e-6}, "adapter": {V: 127.9e-6},
			}},
			{Title: "topics: time", Unit: Seconds, Values: map[string]Value{
				"go-redis": {V: 0.233}, "adapter": {V: 8.6},
			}},
			{Title: "topics: heap", Unit: Bytes, Values: map[string]Value{
				"go-redis": {V: 62}, "adapter": {V: 11953.2},
			}},
			{Title: "allocs", Size: 256, Unit: Count, Values: map[string]Value{
				"go-redis": {V: 13.24}, "adapter": {V: 39.31},
			}},
			{Title: "sharded / classic", Size: 256, Unit: Ratio, NoRatio: true, Values: map[string]Value{
				"go-redis": {V: 1.234}, "adapter": {V: 1.6251},
			}},
		},
		Notes:        []string{"*end to end*: what it is."},
		RedisVersion: "7.0.15",
		GoVersion:    "go1.26.8",
		GOMAXPROCS:   2,
		Cluster:      "3 masters, 0 replicas",
		Started:      time.Date(2026, 11, 30, 15, 0, 0, 0, time.UTC),
		Elapsed:      150400 * time.Millisecond,
		Duration:     300 * time.Millisecond,
		Rounds:       3,
	}
	var b strings.Builder
	require.NoError(t, rep.WriteTable(&b))
	// redisstream has no value in any row: no column.
	assert.Equal(t, `| case | size | raw go-redis | adapter (envelope) | gochannel | adapter / raw |
|---|---|---:|---:|---:|---:|
| end to end (msg/s) | 16 B | 300,000 | 150,000 | 1,234,567 | 0.50× |
|  | 64 KiB | 9,000 | failed | 8,000 | — |
| latency p50 | 256 B | 85.3 µs | 128 µs | — | 1.50× |
| topics: time |  | 233 ms | 8.60 s | — | 36.91× |
| topics: heap |  | 62 B | 11,953 B | — | 192.79× |
| allocs | 256 B | 13.2 | 39.3 | — | 2.97× |
| sharded / classic | 256 B | 1.23× | 1.63× | — | — |

- *end to end*: what it is.

Failed:

- end to end (msg/s), 64 KiB, adapter (envelope): lost 3

(2026-11-30, Redis 7.0.15, go1.26.8, GOMAXPROCS 2; cluster of 3 masters, 0 replicas; throughput: median of 3 rounds of 300ms, the systems taking turns; run took 2m30s.)
`, b.String())
}

func TestFormat(t *testing.T) {
	assert.Equal(t, "999", formatCount(999))
	assert.Equal(t, "1,000", formatCount(1000))
	assert.Equal(t, "-12,345,678", formatCount(-12345678))
	assert.Equal(t, "16 B", formatSize(16))
	assert.Equal(t, "4 KiB", formatSize(4096))
	assert.Equal(t, "1000 B", formatSize(1000))
	assert.Equal(t, "12.0 ns", formatDuration(12e-9))
	assert.Equal(t, "1.00 µs", formatDuration(1e-6))
	assert.Equal(t, "999 ms", formatDuration(0.999))
	assert.Equal(t, "12.3 s", formatDuration(12.34))
}

func TestPercentile(t *testing.T) {
	s := make([]time.Duration, 100)
	for i := range s {
		s[i] = time.Duration(i + 1)
	}
	assert.Equal(t, time.Duration(50), percentile(s, 50))
	assert.Equal(t, time.Duration(99), percentile(s, 99))
	assert.Equal(t, time.Duration(7), percentile(s[6:7], 99))
}

func TestPayload(t *testing.T) {
	for _, n := range []int{8, 16, 65536} {
		p := payload(n)
		assert.Len(t, p, n)
		assert.True(t, strings.HasPrefix(string(p), `{"d":"`) && strings.HasSuffix(string(p), `"}`))
	}
}

func TestWindowSize(t *testing.T) {
	assert.Equal(t, 1000, windowSize(16, 1, 100))
	assert.Equal(t, 200, windowSize(64<<10, 1, 100), "16 MiB of 64 KiB, in whole batches")
	assert.Equal(t, 256, windowSize(64<<10, 64, 1))
	assert.Equal(t, 100, windowSize(1<<20, 1, 100), "at least one batch")
}

// TestWriteTableSkipped: a cell that was not measured says why, is no
// failure, and leaves the ratio alone.
func TestWriteTableSkipped(t *testing.T) {
	rep := &Report{
		Systems: []System{{"go-redis", "raw go-redis"}, {"adapter", "adapter (envelope)"}, {"nats", "watermill-nats"}, {"handoff", "bare Ack hand-off"}},
		Rows: []*Row{
			{Title: "end to end (msg/s)", Size: 256, Unit: PerSecond, Values: map[string]Value{
				"go-redis": {V: 300000}, "adapter": {V: 150000}, "nats": {Skipped: "not installed"}, "handoff": {V: 1000000},
			}},
			{Title: "publish only (msg/s)", Size: 256, Unit: PerSecond, Values: map[string]Value{
				"go-redis": {V: 500000}, "adapter": {V: 250000}, "nats": {Skipped: "not installed"}, "handoff": {Skipped: "n/a"},
			}},
			{Title: "topics: time", Unit: Seconds, Values: map[string]Value{
				"go-redis": {V: 0.1}, "adapter": {Skipped: "n/a"}, "handoff": {Skipped: "n/a"},
			}},
		},
		Notes:        []string{"*watermill-nats*: not installed."},
		RedisVersion: "7.0.15",
		GoVersion:    "go1.26.8",
		GOMAXPROCS:   2,
		Started:      time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC),
		Elapsed:      3 * time.Second,
		Duration:     time.Second,
		Rounds:       1,
	}
	var b strings.Builder
	require.NoError(t, rep.WriteTable(&b))
	assert.Equal(t, `| case | size | raw go-redis | adapter (envelope) | watermill-nats | bare Ack hand-off | adapter / raw |
|---|---|---:|---:|---:|---:|---:|
| end to end (msg/s) | 256 B | 300,000 | 150,000 | not installed | 1,000,000 | 0.50× |
| publish only (msg/s) | 256 B | 500,000 | 250,000 | not installed | n/a | 0.50× |
| topics: time |  | 100 ms | n/a | — | n/a | — |

- *watermill-nats*: not installed.

(2026-12-03, Redis 7.0.15, go1.26.8, GOMAXPROCS 2; throughput: median of 1 rounds of 1s, the systems taking turns; run took 3s.)
`, b.String())
}
