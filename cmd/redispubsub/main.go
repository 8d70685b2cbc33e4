// Command redispubsub tails, publishes and measures the events that
// watermill-redispubsub Publishers and Subscribers exchange over Redis
// Pub/Sub:
//
//	go install github.com/alkdev/watermill-redispubsub/cmd/redispubsub@latest
//	redispubsub tail --prefix myapp:events: --pattern 'call.*'
//	redispubsub publish --prefix myapp:events: call.responded:uuid-123 '{"ok":true}'
//	redispubsub bench
//
// Redis is named as redis-cli names it, with -u redis://[user:password@]host:port[/db]
// (rediss:// for TLS); the default is $REDIS_URL, else redis://127.0.0.1:6379.
// Run "redispubsub COMMAND --help" for the flags and an example of each
// command. The exit status is 0 on success, 1 when Redis or the work failed,
// 2 for a usage error.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &console{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr})
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// commands are the subcommands, by name.
var commands = map[string]func(ctx context.Context, c *console, o options, args []string) int{
	"tail":    runTail,
	"publish": runPublish,
	"bench":   runBench,
}

const mainUsage = `Usage: redispubsub [-u URL] [--prefix PREFIX] [--marshaler NAME] COMMAND [flags] [args]

Commands:
  tail      print the events published on topics or patterns, decoded, as they arrive
  publish   publish one event, or one per line of standard input
  bench     measure raw go-redis and the adapter side by side against your Redis

Flags for every command (before or after it):
`

const mainExample = `
Example:
  export REDIS_URL=redis://127.0.0.1:6379
  redispubsub tail --prefix myapp:events: 'call.responded:uuid-123' &
  redispubsub publish --prefix myapp:events: 'call.responded:uuid-123' '{"ok":true}'

Run "redispubsub COMMAND --help" for the flags of a command.
`

// run is the whole command line: it returns the exit status.
func run(ctx context.Context, args []string, c *console) int {
	o := defaultOptions()
	fs := newFlagSet("redispubsub", mainUsage, mainExample)
	o.register(fs)
	rest, code := c.parse(fs, args, true)
	if code >= 0 {
		return code
	}
	if len(rest) == 0 {
		fs.SetOutput(c.stderr)
		fs.Usage()
		return exitUsage
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		return c.usageError("redispubsub", fmt.Errorf("unknown command %q", rest[0]))
	}
	return cmd(ctx, c, o, rest[1:])
}

// console is where a command reads and writes.
type console struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// plural returns "1 event", "2 events", "2 bodies".
func plural[N ~int | ~uint64](n N, noun string) string {
	switch {
	case n == 1:
	case strings.HasSuffix(noun, "y"):
		noun = strings.TrimSuffix(noun, "y") + "ies"
	default:
		noun += "s"
	}
	return fmt.Sprintf("%d %s", n, noun)
}
