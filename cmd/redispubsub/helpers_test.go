package main

import (
	"context"
	"errors"
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
	cmd    *exec.Cmd
	stdout *collector
	stderr *collector
	exited chan struct{} // closed once err is set
	err    error         // what cmd.Wait returned
}

// startCLI starts the command; it is killed at the end of the test if it
// still runs, and after waitTimeout in any case.
func startCLI(t *testing.T, stdin string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	p := &proc{cmd: exec.CommandContext(ctx, binary, args...), stdout: &collector{}, stderr: &collector{}, exited: make(chan struct{})}
	p.cmd.Stdin = strings.NewReader(stdin)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Env = append(os.Environ(), "REDIS_URL=") // never the environment's Redis
	require.NoError(t, p.cmd.Start())
	go func() {
		defer close(p.exited)
		p.err = p.cmd.Wait()
		cancel()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// wait waits until the command exits and returns what it did.
func (p *proc) wait(t *testing.T) result {
	t.Helper()
	<-p.exited
	var exit *exec.ExitError
	code := 0
	if errors.As(p.err, &exit) {
		code = exit.ExitCode()
	} else {
		require.NoError(t, p.err)
	}
	r := result{code: code, stdout: p.stdout.String(), stderr: p.stderr.String()}
	require.NotEqual(t, -1, code, "killed (after %v?): %+v", waitTimeout, r)
	return r
}

// waitStderr waits until the command wrote a line holding substr on stderr.
func (p *proc) waitStderr(t *testing.T, substr string) {
	t.Helper()
	testutil.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), substr) }, "stderr to say %q", substr)
}

// signal sends sig to the command.
func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// collector keeps a command's output as it comes.
type collector struct {
	testutil.Buffer
}

// lines returns the complete lines written so far.
func (c *collector) lines() []string {
	s := c.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}
