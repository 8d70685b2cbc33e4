package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// TestReadyz starts the service on the embedded Redis: /readyz says ok once
// the Subscriber's connection is live and its first liveness probe arrived.
func TestReadyz(t *testing.T) {
	defer goleak.VerifyNone(t)
	s, _ := startOnEmbeddedRedis(t)
	defer s.close()
	testutil.Eventually(t, func() bool {
		status, body := get(t, "http://"+s.addr+"/readyz")
		return status == http.StatusOK && body == "ok\n"
	}, "/readyz ok")
}

type failing struct{ err error }

func (f failing) Health(context.Context) error { return f.err }

// TestReadyzSaysWhy: a check that fails makes /readyz answer 503 with its
// name and error.
func TestReadyzSaysWhy(t *testing.T) {
	srv := httptest.NewServer(readyz(map[string]healthChecker{
		"subscriber": failing{errors.New("connection dialing")},
		"publisher":  failing{},
	}))
	defer srv.Close()
	status, body := get(t, srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Equal(t, "subscriber: connection dialing\n", body)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}
