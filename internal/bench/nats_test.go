package bench

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// requireNATSServer returns the nats-server binary, or skips the test
// saying why.
func requireNATSServer(t *testing.T) string {
	t.Helper()
	bin, err := findNATSServer("")
	if err != nil {
		t.Skipf("%v (Debian: apt-get install nats-server)", err)
	}
	return bin
}

// natsChildren returns the pids of the nats-server processes whose parent
// is this process, read from /proc; it skips the test where there is no
// /proc.
func natsChildren(t *testing.T) []int {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	require.NoError(t, err)
	var pids []int
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if len(fields) < 2 || s[open+1:end] != "nats-server" || fields[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(s[:open]))
		pids = append(pids, pid)
	}
	return pids
}

// TestNATSServer starts a nats-server on a port of its own, which a client
// reaches, and stops it: the process is reaped, its directory removed.
func TestNATSServer(t *testing.T) {
	bin := requireNATSServer(t)
	s, err := startNATSServer(bin)
	require.NoError(t, err)
	assert.NotEmpty(t, s.version)
	assert.NotContains(t, s.url, ":4222", "never the default port")

	nc, err := nats.Connect(s.url)
	require.NoError(t, err)
	sub, err := nc.SubscribeSync("x")
	require.NoError(t, err)
	require.NoError(t, nc.Publish("x", []byte("hello")))
	msg, err := sub.NextMsg(testutil.Timeout)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(msg.Data))
	nc.Close()
	assert.Equal(t, []int{s.cmd.Process.Pid}, natsChildren(t))

	require.NoError(t, s.close())
	assert.Empty(t, natsChildren(t))
	assert.NoDirExists(t, s.dir)
	_, err = nats.Connect(s.url, nats.NoReconnect())
	assert.Error(t, err, "nothing listens any more")
	require.NoError(t, s.close(), "again")
}

// TestNATSServerFailsToStart: a binary that exits at once is reported with
// its log, and leaves nothing behind.
func TestNATSServerFailsToStart(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("a shell script stands in for nats-server")
	}
	bin := filepath.Join(t.TempDir(), "nats-server")
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\nexit 3\n"), 0o755))
	_, err := startNATSServer(bin)
	require.ErrorContains(t, err, "exited before it was ready (exit status 3)")
	assert.Empty(t, natsChildren(t))
}

// TestRunNATS measures watermill-nats and the hand-off in every case they
// run in, on a nats-server that Run starts and stops.
func TestRunNATS(t *testing.T) {
	requireNATSServer(t)
	cfg := tinyConfig(redistest.Start(t))
	cfg.Cases = []string{"e2e-batch", "e2e-parallel", "publish", "latency", "subscribe"}
	cfg.Systems = []string{"nats", "gochannel", "handoff"}
	cfg.Sizes = []int{256}
	rep, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	assert.Empty(t, natsChildren(t), "Run stopped its nats-server")

	for _, row := range rep.Rows {
		nv, ok := row.Values["nats"]
		if row.Case == "subscribe" {
			assert.False(t, ok, "watermill-nats is not in the subscribe case")
		} else if assert.True(t, ok, row.Title) && assert.NoError(t, nv.Err, row.Title) {
			assert.Positive(t, nv.V, row.Title)
			assert.Empty(t, nv.Skipped, row.Title)
		}
		hv := row.Values["handoff"]
		switch row.Case {
		case "publish", "subscribe":
			assert.Equal(t, Value{Skipped: "n/a"}, hv, row.Title)
		default:
			assert.NoError(t, hv.Err, row.Title)
			assert.Positive(t, hv.V, row.Title)
		}
	}
	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), "| case | size | watermill-nats | gochannel | bare Ack hand-off | adapter / raw |")
	assert.Contains(t, table.String(), "- *watermill-nats*: watermill-nats/v2 on core NATS (JetStream off)")
	assert.Contains(t, table.String(), "- *bare Ack hand-off*: the ceiling of Watermill's Ack contract")
	assert.NotContains(t, table.String(), "failed")
}

// TestRunStopsNATSServerWhenInterrupted: Run ends by its context after the
// first measurement, and its nats-server is gone.
func TestRunStopsNATSServerWhenInterrupted(t *testing.T) {
	requireNATSServer(t)
	cfg := tinyConfig(redistest.Start(t))
	cfg.Cases = []string{"e2e-batch"}
	cfg.Systems = []string{"nats", "handoff"}
	cfg.Sizes = []int{16}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg.Progress = writerFunc(func([]byte) { cancel() })
	rep, err := Run(ctx, cfg)
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, rep)
	assert.Empty(t, natsChildren(t))
}

// TestRunNATSNotInstalled: without a nats-server the watermill-nats cells
// say "not installed", which is no failure, and a note says why.
func TestRunNATSNotInstalled(t *testing.T) {
	cfg := tinyConfig(redistest.Start(t))
	cfg.NATSServer = filepath.Join(t.TempDir(), "nats-server") // no such file
	cfg.Cases = []string{"e2e-parallel", "subscribe"}
	cfg.Systems = []string{"go-redis", "nats"}
	cfg.Sizes = []int{16}
	var progress strings.Builder
	cfg.Progress = &progress
	rep, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Len(t, rep.Rows, 2)
	assert.Equal(t, Value{Skipped: "not installed"}, rep.Rows[0].Values["nats"])
	assert.NotContains(t, rep.Rows[1].Values, "nats", "not in the subscribe case")
	assert.NotContains(t, progress.String(), "watermill-nats", "nothing was run")

	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), " | not installed | — |\n")
	assert.Contains(t, table.String(), "- *watermill-nats*: not installed: no nats-server binary was found")
	assert.NotContains(t, table.String(), "Failed")
}

// writerFunc is an io.Writer that calls f with what it is given.
type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) {
	f(p)
	return len(p), nil
}
