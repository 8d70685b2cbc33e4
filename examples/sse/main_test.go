package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// lineWriter sends what is written to it, a line per Write, on lines.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

// TestRun runs the example on the embedded Redis: the page, the stream of
// the page's topic (events with positions as ids), a refused topic, and a
// clean stop without goroutines left.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Setenv("REDIS_URL", "") // the embedded miniredis, whatever the environment says
	t.Setenv("ADDR", "127.0.0.1:0")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(lineWriter, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, out) }()
	m := regexp.MustCompile(`http://(\S+)/`).FindStringSubmatch(testutil.Wait(t, out, "the address"))
	require.NotNil(t, m)
	base := "http://" + m[1]
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	resp, err := client.Get(base + "/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), `new EventSource("/events?topic=" + encodeURIComponent("call.responded:demo"))`)

	resp, err = client.Get(base + "/events?topic=call.responded:other")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)

	resp, err = client.Get(base + "/events?topic=call.responded:demo")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	lines := bufio.NewReader(resp.Body)
	var events []string
	for {
		line, err := lines.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(line, "event: ") || strings.HasPrefix(line, "id: ") || strings.HasPrefix(line, "data: ") {
			events = append(events, strings.TrimSpace(line))
		}
		if strings.HasPrefix(line, "data: ") {
			t.Log(strings.Join(events, " | "))
			break
		}
	}
	assert.Equal(t, "event: call.responded", events[0])
	assert.Regexp(t, `^id: \d+-\S+$`, events[1])
	assert.Regexp(t, `^data: \{"type":"call.responded","id":"demo","payload":\{"from":"go","n":\d+\},"uuid":"[^"]+","metadata":\{"rps_epoch":"[^"]+","rps_offset":"\d+"\}\}$`, events[2])

	cancel() // ends the open stream too
	require.NoError(t, testutil.Wait(t, done, "run to return"))
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
