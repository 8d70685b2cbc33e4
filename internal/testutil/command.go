package testutil

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Command is a program a test started, its output collected as it comes.
type Command struct {
	cmd            *exec.Cmd
	Stdout, Stderr Buffer
	exited         chan struct{} // closed once err is set
	err            error         // what cmd.Wait returned
}

// StartCommand starts cmd with its standard output and error collected in
// Stdout and Stderr (whatever cmd had there is replaced). The command is
// killed at the end of the test if it still runs. Its run is bounded by
// the caller: make cmd with exec.CommandContext and a deadline.
func StartCommand(t testing.TB, cmd *exec.Cmd) *Command {
	t.Helper()
	c := &Command{cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &c.Stdout, &c.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd, err)
	}
	go func() {
		defer close(c.exited)
		c.err = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.exited
	})
	return c
}

// Wait waits until the command exits and returns its exit status. It fails
// the test, with the output, when the command was killed (by a signal, or
// its context's deadline) or could not be waited for.
func (c *Command) Wait(t testing.TB) int {
	t.Helper()
	<-c.exited
	var exit *exec.ExitError
	if c.err != nil && !errors.As(c.err, &exit) {
		t.Fatalf("%s: %v", c.cmd, c.err)
	}
	code := c.cmd.ProcessState.ExitCode()
	if code == -1 {
		t.Fatalf("%s: killed (%v)\nstdout:\n%s\nstderr:\n%s", c.cmd, c.err, c.Stdout.String(), c.Stderr.String())
	}
	return code
}

// WaitStdout waits until the command wrote substr on its standard output.
func (c *Command) WaitStdout(t testing.TB, substr string) {
	t.Helper()
	Eventually(t, func() bool { return strings.Contains(c.Stdout.String(), substr) }, "stdout to say %q", substr)
}

// WaitStderr waits until the command wrote substr on its standard error.
func (c *Command) WaitStderr(t testing.TB, substr string) {
	t.Helper()
	Eventually(t, func() bool { return strings.Contains(c.Stderr.String(), substr) }, "stderr to say %q", substr)
}

// Signal sends sig to the command.
func (c *Command) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, c.cmd, err)
	}
}
