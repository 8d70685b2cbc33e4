package main

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// jsonEvent is a line of tail --json as a jq user reads it.
type jsonEvent struct {
	Time     string            `json:"time"`
	Topic    string            `json:"topic"`
	Type     string            `json:"type"`
	ID       string            `json:"id"`
	UUID     string            `json:"uuid"`
	Metadata map[string]string `json:"metadata"`
	Payload  json.RawMessage   `json:"payload"`
}

func parseEvents(t *testing.T, stdout string) []jsonEvent {
	t.Helper()
	var events []jsonEvent
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		var e jsonEvent
		require.NoError(t, json.Unmarshal([]byte(line), &e), "line %q", line)
		require.NotEmpty(t, e.Time)
		require.NotEmpty(t, e.UUID)
		events = append(events, e)
	}
	return events
}

// TestTailAndPublish: tail prints, as JSON lines, what publish sends, on a
// topic and on a pattern, with a prefix, from an argument and from stdin.
func TestTailAndPublish(t *testing.T) {
	srv := startRedis(t)
	tail := startCLI(t, "", "tail", "-u", srv.url, "--prefix", "app:", "--json", "--count", "3", "orders", "--pattern", "call.*")
	tail.WaitStderr(t, "redispubsub tail: subscribed to orders, pattern call.* on "+srv.url)

	r := runCLI(t, "", "publish", "-u", srv.url, "--prefix", "app:", "orders", `{"id": 1}`, "-m", "trace=t-1", "-m", "k=a=b")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "redispubsub publish: published 1 event on channel \"app:orders\" (0 reached no subscriber)\n", r.stderr)
	require.Empty(t, r.stdout)

	// Flags before the command work too; blank lines are skipped.
	r = runCLI(t, "{\"ok\":true}\n\n{\"ok\":false}\n", "-u", srv.url, "--prefix", "app:", "publish", "call.responded:uuid-123")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "published 2 events on channel \"app:call.responded:uuid-123\"")

	res := tail.wait(t)
	require.Equal(t, 0, res.code, res.stderr)
	events := parseEvents(t, res.stdout)
	require.Len(t, events, 3, res.stdout)
	// The topic and the pattern are two subscriptions: their events may
	// interleave either way, each subscription's keep their order.
	slices.SortStableFunc(events, func(a, b jsonEvent) int { return strings.Compare(b.Topic, a.Topic) })
	require.Equal(t, "orders", events[0].Topic)
	require.Equal(t, "orders", events[0].Type)
	require.Equal(t, "", events[0].ID)
	require.Equal(t, map[string]string{"trace": "t-1", "k": "a=b"}, events[0].Metadata)
	require.JSONEq(t, `{"id":1}`, string(events[0].Payload))
	for i, ok := range []string{"true", "false"} {
		e := events[1+i]
		require.Equal(t, "call.responded:uuid-123", e.Topic)
		require.Equal(t, "call.responded", e.Type)
		require.Equal(t, "uuid-123", e.ID)
		require.Equal(t, map[string]string{}, e.Metadata)
		require.Equal(t, `{"ok":`+ok+`}`, string(e.Payload))
	}
	require.Contains(t, res.stderr, "redispubsub tail: 3 events; received 3, gaps 0, drops 0, decode failures 0, duplicates 0, reconnects 0\n")
}

// TestTailTextLine pins the text form of an event.
func TestTailTextLine(t *testing.T) {
	srv := startRedis(t)
	tail := startCLI(t, "", "tail", "-u", srv.url, "--count", "1", "orders")
	tail.WaitStderr(t, "subscribed to orders")
	// The envelope marshaler cannot decode a msgpack body: counted, not printed.
	require.Equal(t, 0, runCLI(t, "", "publish", "-u", srv.url, "--marshaler", "msgpack", "orders", `plain text`).code)
	require.Equal(t, 0, runCLI(t, "", "publish", "-u", srv.url, "orders", `{"id":1}`, "-m", "trace=t 1").code)
	res := tail.wait(t)
	require.Equal(t, 0, res.code, res.stderr)
	require.Regexp(t, regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} orders type=orders id="" uuid=[0-9a-f-]{36} metadata=\{"trace":"t 1"\} payload=\{"id":1\}\n$`), res.stdout)
	require.Contains(t, res.stderr, "redispubsub tail: 1 body not decoded with the envelope marshaler, skipped (-v shows why)\n")
}

// TestTailForeignBodiesAndTrouble: a TypeScript peer's body (no uuid, no
// metadata) published raw, a body that does not decode, a gap and a
// reconnect, all reported.
func TestTailForeignBodiesAndTrouble(t *testing.T) {
	srv := startRedis(t)
	tail := startCLI(t, "", "tail", "-u", srv.url, "--json", "--count", "3", "--pattern", "call.*")
	tail.WaitStderr(t, "subscribed to pattern call.*")

	srv.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
	tail.WaitStderr(t, "redispubsub tail: reconnected after ")

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	require.NoError(t, rdb.Publish(ctx, "call.responded:uuid-123", `{"type":"call.responded","id":"uuid-123","payload":{"ok":true}}`).Err())
	require.NoError(t, rdb.Publish(ctx, "call.bad", `not json`).Err())
	// A Go Publisher's stamps, numbers 2 and 3 missing.
	for _, seq := range []string{"1", "4"} {
		body := `{"type":"call.g","payload":{"seq":` + seq + `},"metadata":{"rps_pub":"P1","rps_seq":"` + seq + `"}}`
		require.NoError(t, rdb.Publish(ctx, "call.g", body).Err())
	}

	res := tail.wait(t)
	require.Equal(t, 0, res.code, res.stderr)
	events := parseEvents(t, res.stdout)
	require.Len(t, events, 3, res.stdout)
	ts := events[0]
	require.Equal(t, jsonEvent{Time: ts.Time, Topic: "call.responded:uuid-123", Type: "call.responded", ID: "uuid-123",
		UUID: ts.UUID, Metadata: map[string]string{}, Payload: json.RawMessage(`{"ok":true}`)}, ts)
	require.Equal(t, `{"seq":1}`, string(events[1].Payload))
	require.Equal(t, map[string]string{}, events[1].Metadata, "the stamp is the Subscriber's, not shown")
	require.Equal(t, `{"seq":4}`, string(events[2].Payload))
	require.Contains(t, res.stderr, "redispubsub tail: gap on call.g: 2 messages of publisher P1 never arrived (sequence 2 to 3)\n")
	require.Contains(t, res.stderr, "redispubsub tail: 1 body not decoded with the envelope marshaler, skipped (-v shows why)\n")
	require.Contains(t, res.stderr, "redispubsub tail: 3 events; received 4, gaps 2, drops 0, decode failures 1, duplicates 0, reconnects 1\n")
}

// TestTailSignals: SIGINT and SIGTERM end tail cleanly, with its summary.
func TestTailSignals(t *testing.T) {
	srv := startRedis(t)
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			tail := startCLI(t, "", "tail", "-u", srv.url, "orders")
			tail.WaitStderr(t, "subscribed to orders")
			require.Equal(t, 0, runCLI(t, "", "publish", "-u", srv.url, "orders", `{}`).code)
			testutil.Eventually(t, func() bool { return len(lines(tail.Stdout.String())) == 1 }, "the event printed")
			tail.Signal(t, sig)
			res := tail.wait(t)
			require.Equal(t, 0, res.code, res.stderr)
			require.Contains(t, res.stderr, "redispubsub tail: 1 event; received 1, gaps 0")
		})
	}
}
