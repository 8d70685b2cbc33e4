package main

import "github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"

// startServer starts a redis-server of its own on a free port, with the test
// harness's core, and returns its address and the function that stops it.
func startServer() (addr string, stop func() error, err error) {
	srv, err := redisproc.Start(redisproc.Options{})
	if err != nil {
		return "", nil, err
	}
	return srv.Addr(), srv.Close, nil
}
