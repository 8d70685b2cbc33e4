package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPublishRefusedPayload: a payload the marshaler refuses (the raw JSON
// one refuses text) fails the command, says why, and stops there.
func TestPublishRefusedPayload(t *testing.T) {
	srv := startRedis(t)
	// The default envelope carries any payload (text as base64).
	r := runCLI(t, "", "publish", "-u", srv.url, "orders", "hello")
	require.Equal(t, 0, r.code, r.stderr)

	r = runCLI(t, "{\"id\":1}\nhello\n{\"id\":3}\n", "publish", "-u", srv.url, "--marshaler", "rawjson", "orders")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "redispubsub publish: event 2: payload refused by the rawjson marshaler")
	require.Contains(t, r.stderr, "redispubsub publish: published 1 event on channel \"orders\" (1 reached no subscriber)")

	r = runCLI(t, "", "publish", "-u", srv.url, "--marshaler", "msgpack", "orders", "hello")
	require.Equal(t, 0, r.code, r.stderr)
}
