package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// waitTimeout bounds every command and every wait of these tests; it only
// fires when something hangs.
const waitTimeout = 30 * time.Second

// binary is the redispubsub command that TestMain built.
var binary string

// TestMain builds the command once, so that the tests run the real binary.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "redispubsub-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "redispubsub")
	code := 1
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
	} else {
		code = m.Run()
	}
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// server is a redis-server for one test, and its URL.
type server struct {
	*redistest.Server
	url string
}

// startRedis starts a redis-server for the test (the one place that knows
// the harness).
func startRedis(t *testing.T) server {
	srv := redistest.Start(t)
	return server{Server: srv, url: "redis://" + srv.Addr()}
}

// closedPort returns the URL of a local port that nothing listens on.
func closedPort(t *testing.T) (host string, port int) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port = l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return "127.0.0.1", port
}

// result is what a finished command did.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs the command with stdin to its end.
func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	p := startCLI(t, stdin, args...)
	return p.wait(t)
}

// proc is a running command whose output is collected as it comes.
type proc struct {
	*testutil.Command
}

// startCLI starts the command; it is killed at the end of the test if it
// still runs, and after waitTimeout in any case.
func startCLI(t *testing.T, stdin string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "REDIS_URL=") // never the environment's Redis
	return &proc{testutil.StartCommand(t, cmd)}
}

// wait waits until the command exits and returns what it did.
func (p *proc) wait(t *testing.T) result {
	t.Helper()
	code := p.Wait(t)
	return result{code: code, stdout: p.Stdout.String(), stderr: p.Stderr.String()}
}

// lines returns the complete lines of s.
func lines(s string) []string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}
