package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestRun runs the quickstart against the embedded Redis, so that CI proves
// the example keeps working and shuts down without leaking goroutines.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Setenv("REDIS_URL", "") // the embedded miniredis, whatever the environment says

	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}

	// The poisoned order and order 5 are reported by different goroutines, in
	// either order: compare the lines as a sorted list.
	want := []string{
		"router running, subscribed to quickstart:orders and quickstart:orders.poison",
		"publishing 5 orders",
		"handled order 1 (2 books)",
		"handled order 2 (1 lamp)",
		"order 3: attempt 1 failed (payment service timed out), retrying",
		"order 3 handled on attempt 2",
		"order 4: attempt 1 failed (out of stock), retrying",
		"order 4: attempt 2 failed (out of stock), retrying",
		"order 4: attempt 3 failed (out of stock), giving up",
		`order 4 poisoned: reason="item out of stock"`,
		"handled order 5 (4 pens)",
		"all 5 orders handled or poisoned; shutting down",
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("output:\n%s\nwant these lines (in any order):\n%s", out.String(), strings.Join(want, "\n"))
	}
	if got[0] != want[0] || got[len(got)-1] != want[len(want)-1] {
		t.Fatalf("output does not start and end as expected:\n%s", out.String())
	}
}
