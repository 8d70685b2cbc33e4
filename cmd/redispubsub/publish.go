package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

const publishUsage = `Usage: redispubsub publish [flags] TOPIC [PAYLOAD]

Publishes PAYLOAD as one event on TOPIC or, without PAYLOAD, one event per
line of standard input (blank lines skipped), each once Redis accepted the
one before. With the envelope and rawjson marshalers a payload must be JSON:
a string needs its quotes ('"hello"'). Prints on standard error how many
events were published and how many of them reached no subscriber. Stops with
exit status 1 at the first event that is refused or that Redis did not accept
within --timeout.

Flags:
`

const publishExample = `
Examples:
  redispubsub publish --prefix myapp:events: call.responded:uuid-123 '{"ok":true}' -m trace=t-1
  printf '{"id":1}\n{"id":2}\n' | redispubsub publish --prefix quickstart: orders
`

// maxLine bounds a line of standard input, hence a payload read from it.
const maxLine = 64 << 20

func runPublish(ctx context.Context, c *console, o options, args []string) int {
	fs := newFlagSet("redispubsub publish", publishUsage, publishExample)
	o.register(fs)
	var meta listFlag
	fs.Var(&meta, "m", "metadata `key=value` of every event (repeatable)")
	pos, code := c.parse(fs, args, false)
	if code >= 0 {
		return code
	}
	metadata, err := parseMetadata(meta)
	switch {
	case err != nil:
	case len(pos) == 0 || len(pos) > 2:
		err = fmt.Errorf("want TOPIC [PAYLOAD], got %d arguments", len(pos))
	case pos[0] == "":
		err = errors.New("empty TOPIC")
	default:
		err = o.check()
	}
	if err != nil {
		return c.usageError(fs.Name(), err)
	}
	p := &publishing{o: o, topic: pos[0], metadata: metadata}
	if len(pos) == 2 {
		err = p.run(ctx, c, func(yield func(string) bool) { yield(pos[1]) })
	} else {
		in := &stdinLines{ctx: ctx, c: c}
		if err = p.run(ctx, c, in.all); err == nil {
			err = in.err
		}
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "%s: %v\n", fs.Name(), err)
		return exitFail
	}
	return exitOK
}

// parseMetadata turns the -m flags into metadata.
func parseMetadata(flags []string) (message.Metadata, error) {
	md := make(message.Metadata)
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-m %q: want key=value", f)
		}
		md[k] = v
	}
	return md, nil
}

// publishing is one publish command.
type publishing struct {
	o        options
	topic    string
	metadata message.Metadata
}

// run publishes every payload of payloads, one after another, and reports
// the count on stderr.
func (p *publishing) run(ctx context.Context, c *console, payloads func(yield func(string) bool)) (err error) {
	client, err := p.o.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{
		Client:        client,
		ChannelPrefix: p.o.prefix,
		Marshaler:     p.o.marshalerValue(),
	}, p.o.logger(c.stderr))
	if err != nil {
		return err
	}
	defer pub.Close()
	defer func() {
		st := pub.Stats()
		fmt.Fprintf(c.stderr, "redispubsub publish: published %s on channel %q (%d reached no subscriber)\n",
			plural(st.Published, "event"), p.o.prefix+p.topic, st.NoSubscribers)
	}()
	n := 0
	for payload := range payloads {
		n++
		if err := p.publish(ctx, pub, payload); err != nil {
			return fmt.Errorf("event %d: %w", n, err)
		}
	}
	return nil
}

// publish sends one event, bounded by the timeout.
func (p *publishing) publish(ctx context.Context, pub *redispubsub.Publisher, payload string) error {
	msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
	for k, v := range p.metadata {
		msg.Metadata.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(ctx, p.o.timeout)
	defer cancel()
	msg.SetContext(ctx)
	err := pub.Publish(p.topic, msg)
	switch {
	case errors.Is(err, redispubsub.ErrPayloadNotJSON):
		return fmt.Errorf("payload refused by the %s marshaler (a JSON string needs its quotes, '\"text\"'; --marshaler msgpack takes any bytes): %w", p.o.marshaler, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("not accepted by Redis within %v: %w", p.o.timeout, err)
	case err != nil:
		return fmt.Errorf("not published: %w", err)
	}
	return nil
}

// stdinLines yields the non-blank lines of standard input until its end or
// until ctx ends; err then says why it stopped early, if it did.
type stdinLines struct {
	ctx context.Context
	c   *console
	err error
}

func (l *stdinLines) all(yield func(string) bool) {
	// Reading stdin cannot be interrupted: an interrupted run leaves the
	// reading goroutine behind, and the process exits.
	ch := make(chan string)
	stop := make(chan struct{})
	defer close(stop)
	var readErr error
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(l.c.stdin)
		sc.Buffer(make([]byte, 0, 64<<10), maxLine)
		for sc.Scan() {
			select {
			case ch <- sc.Text():
			case <-stop:
				return
			}
		}
		readErr = sc.Err()
	}()
	for {
		select {
		case <-l.ctx.Done():
			l.err = errors.New("interrupted")
			return
		case line, ok := <-ch:
			if !ok {
				if readErr != nil {
					l.err = fmt.Errorf("standard input: %w", readErr)
				}
				return
			}
			if strings.TrimSpace(line) != "" && !yield(line) {
				return
			}
		}
	}
}
