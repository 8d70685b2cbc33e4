package main

import (
	"bytes"
	"context"
	"testing"

	"go.uber.org/goleak"
)

// TestRun runs the example against the embedded Redis, so that CI proves it
// keeps working and shuts down without leaking goroutines.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Setenv("REDIS_URL", "") // the embedded miniredis, whatever the environment says

	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	const want = "received: type call.responded, id uuid-123, status ringing\n" +
		"received: type call.responded, id uuid-123, status answered\n"
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
