package tests

// Every program under examples/ and cmd/ is built once and run here, its
// output checked for what its documentation (the README, its package
// comment) says it prints: on the embedded Redis (REDIS_URL unset) and on a
// real redis-server (REDIS_URL set) where the program takes both. A new
// program is a new row of programs; TestEveryProgramHasARow fails until it
// has one.

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// program is one row of TestPrograms: a main package and how to run it.
type program struct {
	// pkg is the package, relative to its module's root:
	// "./examples/quickstart".
	pkg string
	// module is the directory of the package's module, relative to the
	// repository root; "" for the root module.
	module string
	args   []string
	// embedded runs the program with REDIS_URL unset (its embedded
	// miniredis); withRedis with REDIS_URL naming a redis-server of the test.
	// A program that starts its own servers (soak, benchtable) has neither.
	embedded, withRedis bool
	// stdout holds what the output must contain, each string somewhere on
	// stdout (concurrent handlers print in either order).
	stdout []string
	// drive, for a program that does not end by itself, makes it end (a
	// flag, a signal) once it has shown what it does; nil: the program ends
	// by itself. Either way it must exit with status 0.
	drive func(t *testing.T, r *programRun)
}

// programs lists every main package under examples/ and cmd/.
var programs = []program{
	{
		pkg: "./examples/quickstart", embedded: true, withRedis: true,
		stdout: []string{
			"router running, subscribed to quickstart:orders and quickstart:orders.poison\n",
			"order 3 handled on attempt 2\n",
			`order 4 poisoned: reason="item out of stock"` + "\n",
			"all 5 orders handled or poisoned; shutting down\n",
		},
	},
	{
		pkg: "./examples/router", embedded: true, withRedis: true,
		stdout: []string{
			"validate A-2: ok on attempt 2 (correlation req-A-2)\n",
			"validate A-3: ok on attempt 2 (correlation req-A-3)\n",
			`POISONED A-4: reason="invalid quantity 0" topic=orders.placed handler=validate` + "\n",
			"notify A-1: shipped (correlation req-A-1)\n",
			"notify A-5: shipped (correlation req-A-5)\n",
			"all 5 orders shipped or poisoned; shutting down\n",
		},
	},
	{
		pkg: "./examples/cqrs", embedded: true, withRedis: true,
		stdout: []string{
			"sent BookRoom too-early before any handler subscribed: lost (Publisher.Stats().NoSubscribers=1)\n",
			"book-room: booking b-3: room 305 for 5 nights, 600 EUR\n",
			"billing: RoomBooked ",
			"notifications: RoomBooked ",
			"all 3 events handled by both handlers; shutting down\n",
		},
	},
	{
		pkg: "./examples/poison-durable", embedded: true, withRedis: true,
		stdout: []string{
			"router closed; nobody has read the poison stream yet; XLEN example:poison-durable:payments.poison = 2\n",
			`inspector: payment p-2 (75 EUR) poisoned: reason="card declined" topic=payments handler=charge` + "\n",
			`inspector: payment p-4 (240 EUR) poisoned: reason="card declined" topic=payments handler=charge` + "\n",
			"inspector got all 2 poisoned payments; done\n",
		},
	},
	{
		pkg: "./examples/eventtarget", embedded: true, withRedis: true,
		stdout: []string{
			"received: type call.responded, id uuid-123, status ringing\n" +
				"received: type call.responded, id uuid-123, status answered\n",
		},
	},
	{
		// Serves /metrics and places an order every 500ms until Ctrl-C.
		pkg: "./examples/observability", args: []string{"-listen", "127.0.0.1:0"}, embedded: true, withRedis: true,
		stdout: []string{"counted order "},
		drive: func(t *testing.T, r *programRun) {
			r.WaitStdout(t, "; an order every 500ms until Ctrl-C\n")
			line := regexp.MustCompile(`metrics on http://(\S+)/metrics; `).FindStringSubmatch(r.Stdout.String())
			require.NotNil(t, line, r.Stdout.String())
			published := regexp.MustCompile(`(?m)^redispubsub_publisher_published_total\{name="orders"\} (\d+)$`)
			testutil.Eventually(t, func() bool {
				m := published.FindStringSubmatch(scrapeMetrics(t, "http://"+line[1]+"/metrics"))
				if m == nil {
					return false
				}
				n, err := strconv.Atoi(m[1])
				require.NoError(t, err)
				return n >= 2
			}, "/metrics to count the first order and its counted copy")
			r.Signal(t, os.Interrupt)
		},
	},
	{
		// The traced example (module otel): an order a second, each span
		// a JSON line, until Ctrl-C.
		pkg: "./examples/observability", module: "otel", args: []string{"-listen", "127.0.0.1:0"}, embedded: true, withRedis: true,
		stdout: []string{"counted order 1, trace ", `"Name":`},
		drive: func(t *testing.T, r *programRun) {
			r.WaitStdout(t, "counted order 1, trace ")
			r.Signal(t, os.Interrupt)
		},
	},
	{
		// Serves a page and the SSE stream of its topic (ADDR=127.0.0.1:0
		// for every program) and publishes a few events a second until
		// Ctrl-C: a stream shows events with positions as ids.
		pkg: "./examples/sse", embedded: true, withRedis: true,
		drive: func(t *testing.T, r *programRun) {
			r.WaitStdout(t, " in a browser (Ctrl-C stops)\n")
			addr := regexp.MustCompile(`open http://(\S+)/ `).FindStringSubmatch(r.Stdout.String())
			require.NotNil(t, addr, r.Stdout.String())
			resp, err := http.Get("http://" + addr[1] + "/events?topic=call.responded:demo")
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
			lines := bufio.NewScanner(resp.Body)
			var event, id bool
			for !(event && id) && lines.Scan() {
				event = event || lines.Text() == "event: call.responded"
				id = id || regexp.MustCompile(`^id: \d+-\S+$`).MatchString(lines.Text())
			}
			require.True(t, event && id, "an event named by its type, with a position as id: %v", lines.Err())
			r.Signal(t, os.Interrupt) // the stream ends with the server's Shutdown
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		},
	},
	{
		// Needs a Redis (its default is 127.0.0.1:6379, never used here):
		// tail prints what publish sends.
		pkg: "./cmd/redispubsub", args: []string{"tail", "--count", "1", "call.responded:uuid-123"}, withRedis: true,
		stdout: []string{` call.responded:uuid-123 type=call.responded id=uuid-123 uuid=`, `metadata={"trace":"t-1"} payload={"ok":true}` + "\n"},
		drive: func(t *testing.T, r *programRun) {
			r.WaitStderr(t, "redispubsub tail: subscribed to call.responded:uuid-123 on ")
			publish := r.command(t, "publish", "call.responded:uuid-123", `{"ok":true}`, "-m", "trace=t-1")
			out, err := publish.CombinedOutput()
			require.NoError(t, err, "%s", out)
			require.Contains(t, string(out), `redispubsub publish: published 1 event on channel "call.responded:uuid-123" (0 reached no subscriber)`)
		},
	},
	{
		// Starts its own redis-server, kills it and its clients' connections.
		pkg:    "./cmd/soak",
		args:   []string{"-duration", "3s", "-kill-every", "1500ms", "-client-kill-every", "1s"},
		stdout: []string{"soak: accounting per Subscriber: ", "soak: PASS\n"},
	},
	{
		// Starts its own redis-server; the table on stdout.
		pkg:  "./cmd/benchtable",
		args: []string{"-cases", "publish", "-sizes", "16", "-systems", "go-redis,adapter", "-duration", "100ms", "-rounds", "1"},
		stdout: []string{
			"| case | size | raw go-redis | adapter (envelope) | adapter / raw |\n",
			"| publish only, batches of 100 (msg/s) | 16 B | ",
		},
	},
}

// TestPrograms builds every program once (with -race when the tests run
// with it) and runs each row, the rows in parallel.
func TestPrograms(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs every program of examples/ and cmd/")
	}
	bin := buildPrograms(t)
	redisServer, err := redistest.Binary()
	require.NoError(t, err)
	for _, p := range programs {
		var variants []string
		if p.embedded {
			variants = append(variants, "embedded")
		}
		if p.withRedis {
			variants = append(variants, "REDIS_URL")
		}
		if len(variants) == 0 {
			variants = []string{"own servers"}
		}
		for _, variant := range variants {
			t.Run(filepath.Join(p.module, p.pkg)+"/"+variant, func(t *testing.T) {
				t.Parallel()
				env := []string{"REDIS_URL=", redistest.EnvBinary + "=" + redisServer, "ADDR=127.0.0.1:0"}
				if variant == "REDIS_URL" {
					env[0] = "REDIS_URL=redis://" + redistest.Start(t).Addr()
				}
				r := startProgram(t, filepath.Join(bin, p.module, filepath.Base(p.pkg)), env, p.args)
				if p.drive != nil {
					p.drive(t, r)
				}
				code := r.Wait(t)
				require.Zero(t, code, "exit status\nstdout:\n%s\nstderr:\n%s", r.Stdout.String(), r.Stderr.String())
				for _, want := range p.stdout {
					require.Contains(t, r.Stdout.String(), want, "stdout (stderr:\n%s)", r.Stderr.String())
				}
			})
		}
	}
}

// TestEveryProgramHasARow fails for a main package under examples/ or cmd/
// of the root module that programs does not run.
func TestEveryProgramHasARow(t *testing.T) {
	list := exec.Command("go", "list", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`, "./examples/...", "./cmd/...")
	list.Dir = ".."
	out, err := list.Output()
	require.NoError(t, err)
	var rows []string
	for _, p := range programs {
		if p.module == "" {
			rows = append(rows, strings.TrimPrefix(p.pkg, "./"))
		}
	}
	for _, path := range strings.Fields(string(out)) {
		pkg := strings.TrimPrefix(path, "github.com/alkdev/watermill-redispubsub/")
		require.True(t, slices.Contains(rows, pkg), "%s is a program without a row in programs", pkg)
	}
}

// buildPrograms builds every program of programs, in one go build per
// module, into a directory of the test (a subdirectory per module other
// than the root), and returns the directory. (The binaries are named for
// their package's directory: two programs of one name in one module would
// need a rename here.)
func buildPrograms(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	pkgs := map[string][]string{} // by module
	for _, p := range programs {
		pkgs[p.module] = append(pkgs[p.module], p.pkg)
	}
	for module, pkgs := range pkgs {
		args := []string{"build", "-o", filepath.Join(dir, module) + string(filepath.Separator)}
		if testutil.Race {
			args = append(args, "-race")
		}
		build := exec.Command("go", append(args, pkgs...)...)
		build.Dir = filepath.Join("..", module)
		out, err := build.CombinedOutput()
		require.NoError(t, err, "%s: %s\n%s", build.Dir, build, out)
	}
	return dir
}

// programRun is a running program.
type programRun struct {
	*testutil.Command
	bin string
	env []string
}

// programTimeout bounds a program's run; it only runs out when one hangs.
const programTimeout = time.Minute

// startProgram starts bin with args, env added to the test's environment;
// it is killed after programTimeout, and at the end of the test if it
// still runs.
func startProgram(t *testing.T, bin string, env, args []string) *programRun {
	t.Helper()
	r := &programRun{bin: bin, env: env}
	r.Command = testutil.StartCommand(t, r.command(t, args...))
	return r
}

// command returns a command that runs the program again, with other args
// and the same environment, bounded by programTimeout.
func (r *programRun) command(t *testing.T, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), programTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, r.bin, args...)
	cmd.Env = append(os.Environ(), r.env...)
	return cmd
}

// scrapeMetrics GETs url and returns the body.
func scrapeMetrics(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}
