package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"tail", "--help"}, {"publish", "-h"}, {"bench", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, "", args...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Empty(t, r.stderr)
			require.Contains(t, r.stdout, "Usage: redispubsub ")
			require.Contains(t, r.stdout, "Example")
			require.Contains(t, r.stdout, "-u URL")
		})
	}
}

// TestBadInput: usage errors exit with 2 and say what is wrong, before
// anything connects (no server runs here); no password is ever echoed.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage: redispubsub "},
		{[]string{"frobnicate"}, `redispubsub: unknown command "frobnicate"`},
		{[]string{"tail", "--nope", "orders"}, "redispubsub tail: flag provided but not defined: -nope\nRun 'redispubsub tail --help' for usage."},
		{[]string{"tail"}, "redispubsub tail: no TOPIC and no --pattern"},
		{[]string{"tail", "--count", "-1", "orders"}, "redispubsub tail: --count must not be negative"},
		{[]string{"tail", "--marshaler", "xml", "orders"}, `redispubsub tail: unknown marshaler "xml": want envelope, rawjson or msgpack`},
		{[]string{"--marshaler", "xml", "publish", "orders", "{}"}, `redispubsub publish: unknown marshaler "xml"`},
		{[]string{"publish", "-m", "novalue", "orders", "{}"}, `redispubsub publish: -m "novalue": want key=value`},
		{[]string{"publish", "-m", "=v", "orders", "{}"}, `redispubsub publish: -m "=v": want key=value`},
		{[]string{"publish"}, "redispubsub publish: want TOPIC [PAYLOAD], got 0 arguments"},
		{[]string{"publish", "a", "b", "c"}, "redispubsub publish: want TOPIC [PAYLOAD], got 3 arguments"},
		{[]string{"publish", "--timeout", "0s", "orders", "{}"}, "redispubsub publish: --timeout must be positive"},
		{[]string{"bench", "--sizes", "16,x"}, `redispubsub bench: --sizes: "x" is not a positive number`},
		{[]string{"bench", "extra"}, `redispubsub bench: unexpected argument "extra"`},
		{[]string{"tail", "-u", "redis://me:s3cret@host:bad/0", "orders"}, "redispubsub tail: -u redis://xxxxx@host:bad/0: invalid port"},
		{[]string{"tail", "-u", "http://me:s3cret@host/0", "orders"}, "redispubsub tail: -u http://me:xxxxx@host/0: redis: invalid URL scheme: http"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, "", tc.args...)
			require.Equal(t, 2, r.code, r.stderr)
			require.Contains(t, r.stderr, tc.want)
			require.NotContains(t, r.stdout+r.stderr, "s3cret")
		})
	}
}

// TestNoRedis: a closed port fails clearly, with status 1, within the
// timeout, and without showing the URL's password.
func TestNoRedis(t *testing.T) {
	host, port := closedPort(t)
	url := fmt.Sprintf("redis://me:s3cret@%s:%d/0", host, port)
	want := fmt.Sprintf(": cannot reach Redis at redis://me:xxxxx@%s:%d/0: dial tcp %s:%d: connect: connection refused\n", host, port, host, port)
	for _, args := range [][]string{
		{"tail", "-u", url, "--timeout", "2s", "orders"},
		{"publish", "-u", url, "--timeout", "2s", "orders", "{}"},
		{"bench", "-u", url, "--timeout", "2s"},
	} {
		t.Run(args[0], func(t *testing.T) {
			r := runCLI(t, "{}\n", args...)
			require.Equal(t, 1, r.code, r.stderr)
			require.Equal(t, "redispubsub "+args[0]+want, r.stderr)
			require.Empty(t, r.stdout)
		})
	}
}
