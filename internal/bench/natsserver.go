package bench

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// defaultNATSServer is the binary of the watermill-nats column, looked up
// in PATH.
const defaultNATSServer = "nats-server"

// How long a nats-server may take to come up, and to exit after SIGTERM
// (then it gets SIGKILL).
const (
	natsStartTimeout = 10 * time.Second
	natsStopTimeout  = 5 * time.Second
)

// errNATSNotInstalled: the nats-server binary is not found.
var errNATSNotInstalled = errors.New("not installed")

// natsServer is a nats-server process that Run started for itself: core
// NATS only (JetStream is off unless asked for, and it is not), on a port
// of 127.0.0.1 that the kernel chose, in a directory of its own.
type natsServer struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process is reaped
	dir  string
	url  string
	// version is what the server says it is.
	version string
}

// findNATSServer returns the path of bin, a path or a name looked up in
// PATH (""; defaultNATSServer), or an error wrapping errNATSNotInstalled.
func findNATSServer(bin string) (string, error) {
	if bin == "" {
		bin = defaultNATSServer
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s %w: %v", bin, errNATSNotInstalled, err)
	}
	return p, nil
}

// startNATSServer starts bin on a random free port of 127.0.0.1 (-p -1, the
// port read from the file that --ports_file_dir makes it write) with a name
// of its own, and returns once a client connected to it and saw that
// name: the port is this process's, not another server's. On error no
// process is left running. On Linux the kernel kills the server when the
// process that started it dies without closing it.
func startNATSServer(bin string) (*natsServer, error) {
	dir, err := os.MkdirTemp("", "redispubsub-bench-nats-")
	if err != nil {
		return nil, err
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "redispubsub-bench-" + hex.EncodeToString(b[:])
	log := filepath.Join(dir, "nats-server.log")
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", "-1", "-n", name, "--ports_file_dir", dir, "-l", log)
	cmd.Dir = dir
	cmd.SysProcAttr = natsProcAttr()
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &natsServer{cmd: cmd, done: make(chan struct{}), dir: dir}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(name); err != nil {
		tail := s.logTail(log)
		_ = s.close()
		return nil, fmt.Errorf("%s: %w%s", bin, err, tail)
	}
	return s, nil
}

// waitReady polls for the ports file, then connects and checks the
// server's name.
func (s *natsServer) waitReady(name string) error {
	deadline := time.Now().Add(natsStartTimeout)
	backoff := 2 * time.Millisecond
	for {
		err := s.probe(name)
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("exited before it was ready (%v)", s.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %v", natsStartTimeout, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-s.done:
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// probe reads the client URL from the ports file, once, and checks that
// the server there is s by its name.
func (s *natsServer) probe(name string) error {
	if s.url == "" {
		url, err := s.portsFileURL()
		if err != nil {
			return err
		}
		s.url = url
	}
	nc, err := nats.Connect(s.url, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	if got := nc.ConnectedServerName(); got != name {
		return fmt.Errorf("%s is served by %q, not by the server started (%q)", s.url, got, name)
	}
	s.version = nc.ConnectedServerVersion()
	return nil
}

// portsFileURL returns the client URL of the ports file the server writes
// into s.dir once it listens.
func (s *natsServer) portsFileURL() (string, error) {
	files, _ := filepath.Glob(filepath.Join(s.dir, "*.ports"))
	if len(files) == 0 {
		return "", errors.New("no ports file yet")
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		return "", err
	}
	var ports struct {
		Nats []string `json:"nats"`
	}
	if err := json.Unmarshal(b, &ports); err != nil || len(ports.Nats) == 0 {
		return "", fmt.Errorf("ports file %s: %q", files[0], b) // maybe written half yet
	}
	return ports.Nats[0], nil
}

// close stops the server, with SIGTERM and SIGKILL after natsStopTimeout,
// waits until it is reaped, and removes its directory. It is safe to call
// more than once.
func (s *natsServer) close() error {
	var err error
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(natsStopTimeout)
		select {
		case <-s.done:
		case <-t.C:
			err = fmt.Errorf("nats-server (pid %d) did not exit within %v of SIGTERM; killed", s.cmd.Process.Pid, natsStopTimeout)
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		t.Stop()
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// logTail returns the last lines of the server's log, to explain a failed
// start; "" when there is none.
func (s *natsServer) logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return "\n--- tail of " + path + " ---\n" + strings.Join(lines[max(0, len(lines)-10):], "\n")
}
