package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// healthChecker is what /readyz asks: *redispubsub.Subscriber and
// *redispubsub.Publisher have Health.
type healthChecker interface {
	Health(ctx context.Context) error
}

// readyzTimeout bounds the checks of one /readyz request (the Publisher's
// is a PING through its client).
const readyzTimeout = 2 * time.Second

// readyz is a Kubernetes-style readiness endpoint: 200 "ok" when every
// check's Health returns nil, else 503 with each failure on a line. A
// Subscriber is ready when every connection is live, resubscribed and has
// received its latest liveness probe; a Publisher when its client answers
// a PING.
func readyz(checks map[string]healthChecker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyzTimeout)
		defer cancel()
		var failed []error
		for name, check := range checks {
			if err := check.Health(ctx); err != nil {
				failed = append(failed, fmt.Errorf("%s: %w", name, err))
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if len(failed) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, errors.Join(failed...))
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
}
