package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

const tailUsage = `Usage: redispubsub tail [flags] TOPIC...
       redispubsub tail [flags] --pattern PATTERN [TOPIC...]

Prints every event published on the topics, and on the topics that match the
Redis glob patterns, from the moment Redis confirmed the subscription: one line
per event on standard output with its topic, type, id, uuid, metadata and
payload (with --json, one JSON object per line). Gaps (stamped messages that
never arrived), drops, bodies that do not decode and reconnects are reported
on standard error as they happen, and a summary of the counts when tail ends:
after --count events, or on Ctrl-C (SIGINT) or SIGTERM.

Flags:
`

const tailExample = `
Examples:
  redispubsub tail --prefix quickstart: orders orders.poison    # while go run ./examples/quickstart runs
  redispubsub tail --pattern 'call.*' --json | jq -c '{topic, payload}'
  redispubsub tail --count 1 call.responded:uuid-123            # waits for one event
`

// statsPollInterval is how often tail reads the Subscriber's counters to
// report drops and decode failures, which have no hook.
const statsPollInterval = 250 * time.Millisecond

func runTail(ctx context.Context, c *console, o options, args []string) int {
	fs := newFlagSet("redispubsub tail", tailUsage, tailExample)
	o.register(fs)
	var patterns listFlag
	fs.Var(&patterns, "pattern", "Redis glob `pattern` of topics to tail, e.g. 'call.*' (repeatable)")
	asJSON := fs.Bool("json", false, "print each event as a JSON object {time, topic, type, id, uuid, metadata, payload} on one line")
	count := fs.Int("count", 0, "exit after this many events (0: until interrupted)")
	topics, code := c.parse(fs, args, false)
	if code >= 0 {
		return code
	}
	switch err := o.check(); {
	case err != nil:
		return c.usageError(fs.Name(), err)
	case len(topics)+len(patterns) == 0:
		return c.usageError(fs.Name(), errors.New("no TOPIC and no --pattern"))
	case *count < 0:
		return c.usageError(fs.Name(), errors.New("--count must not be negative"))
	}
	t := &tailer{c: c, o: o, json: *asJSON, count: *count}
	if err := t.run(ctx, unique(topics), unique(patterns)); err != nil {
		fmt.Fprintf(c.stderr, "%s: %v\n", fs.Name(), err)
		return exitFail
	}
	return exitOK
}

// tailer prints the events of its subscriptions and the Subscriber's news.
type tailer struct {
	c     *console
	o     options
	json  bool
	count int

	outMu   sync.Mutex // serialises stdout and guards printed
	printed int
	errMu   sync.Mutex // serialises stderr, apart from stdout so that a stalled stdout never holds the hooks
	last    redispubsub.SubscriberStats
}

func (t *tailer) run(ctx context.Context, topics, patterns []string) error {
	client, err := t.o.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{
		Client:           client,
		ChannelPrefix:    t.o.prefix,
		Marshaler:        t.o.marshalerValue(),
		SubscribeTimeout: t.o.timeout,
		OnGap: func(g redispubsub.GapEvent) {
			t.notice("gap on %s: %d messages of publisher %s never arrived (sequence %d to %d)", g.Topic, g.Missing(), g.Publisher, g.First, g.Last)
		},
		OnReconnect: func(ev redispubsub.ReconnectEvent) {
			t.notice("reconnected after %v (%s; cause: %v); events published meanwhile are lost", ev.Downtime.Round(time.Millisecond), plural(ev.Attempts, "attempt"), ev.Cause)
		},
	}, t.o.logger(t.c.stderr))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait() // after Close, which closes every channel
	defer sub.Close()
	consume := func(ch <-chan *message.Message, topic string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.consume(ch, topic, cancel)
		}()
	}
	for _, topic := range topics {
		ch, err := sub.Subscribe(ctx, topic)
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", topic, err)
		}
		consume(ch, topic)
	}
	for _, pattern := range patterns {
		ch, err := sub.SubscribePattern(ctx, pattern)
		if err != nil {
			return fmt.Errorf("subscribe to pattern %s: %w", pattern, err)
		}
		consume(ch, "")
	}
	t.notice("subscribed to %s on %s (prefix %q, %s marshaler)", describe(topics, patterns), redact(t.o.url), t.o.prefix, t.o.marshaler)

	ticker := time.NewTicker(statsPollInterval)
	defer ticker.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-ticker.C:
			t.report(sub.Stats())
		}
	}
	// The counts at the end: after Close, nothing changes them any more.
	_ = sub.Close()
	wg.Wait()
	st := sub.Stats()
	t.report(st)
	t.outMu.Lock()
	printed := t.printed
	t.outMu.Unlock()
	t.notice("%s; received %d, gaps %d, drops %d, decode failures %d, duplicates %d, reconnects %d",
		plural(printed, "event"), st.Received, st.Gaps, st.Dropped, st.DecodeFailures, st.Duplicates, st.Reconnects)
	return nil
}

// consume prints the messages of one subscription; topic is "" for a
// pattern, whose messages name their topic. It ends the run after count
// events.
func (t *tailer) consume(ch <-chan *message.Message, topic string, done context.CancelFunc) {
	for msg := range ch {
		tp := topic
		if tp == "" {
			tp = msg.Metadata.Get(redispubsub.MetadataTopic)
		}
		line := newTailEvent(tp, msg, time.Now()).line(t.json)
		t.outMu.Lock()
		if t.count == 0 || t.printed < t.count {
			_, _ = t.c.stdout.Write(line)
			t.printed++
			if t.printed == t.count {
				done()
			}
		}
		t.outMu.Unlock()
		msg.Ack()
	}
}

// report prints what grew in the counters that have no hook.
func (t *tailer) report(st redispubsub.SubscriberStats) {
	if d := st.Dropped - t.last.Dropped; d > 0 {
		t.notice("%s dropped: tail did not keep up and its queue was full", plural(d, "event"))
	}
	if d := st.DecodeFailures - t.last.DecodeFailures; d > 0 {
		t.notice("%s not decoded with the %s marshaler, skipped (-v shows why)", plural(d, "body"), t.o.marshaler)
	}
	if d := st.Duplicates - t.last.Duplicates; d > 0 {
		t.notice("%s dropped (a publisher's pipeline was retried)", plural(d, "duplicate"))
	}
	t.last = st
}

// notice writes one line on stderr.
func (t *tailer) notice(format string, args ...any) {
	t.errMu.Lock()
	defer t.errMu.Unlock()
	fmt.Fprintf(t.c.stderr, "redispubsub tail: "+format+"\n", args...)
}

// describe lists topics and patterns for the subscribed notice.
func describe(topics, patterns []string) string {
	all := append([]string(nil), topics...)
	for _, p := range patterns {
		all = append(all, "pattern "+p)
	}
	return strings.Join(all, ", ")
}

// unique returns l without repetitions, in order: a topic given twice is
// tailed once.
func unique(l []string) []string {
	seen := make(map[string]bool)
	var out []string
	for _, s := range l {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
