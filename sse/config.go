package sse

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// The defaults of Config.
const (
	// DefaultMaxTopicsPerRequest is Config.MaxTopicsPerRequest.
	DefaultMaxTopicsPerRequest = 16
	// DefaultMaxStreams is Config.MaxStreams.
	DefaultMaxStreams = 10_000
	// DefaultBuffer is Config.Buffer: events waiting for one client.
	DefaultBuffer = 64
	// DefaultHeartbeat is Config.Heartbeat: below the 30 to 60 s after which
	// common proxies and load balancers close an idle connection.
	DefaultHeartbeat = 15 * time.Second
	// DefaultWriteTimeout is Config.WriteTimeout.
	DefaultWriteTimeout = 10 * time.Second
)

// ErrInvalidConfig is wrapped by the errors of Config.Validate.
var ErrInvalidConfig = errors.New("sse: invalid config")

// Config configures a Handler. The zero value serves nothing: Authorize is
// required for a stream to be served, every other field has a default.
type Config struct {
	// Authorize decides whether the request r may receive the events of
	// topics (every topic the request names, deduplicated, in its order).
	// A non-nil error refuses the request with 403 Forbidden; the error is
	// logged at debug level and not sent to the client. It is called on the
	// request's goroutine, before anything is subscribed, and may be called
	// concurrently.
	//
	// Required: a Handler without it refuses every request with 403 and
	// says so once in the log, when it is made.
	Authorize func(r *http.Request, topics []string) error

	// MaxTopicsPerRequest is the most topics one request may name; a request
	// with more is refused with 400 Bad Request. Default
	// DefaultMaxTopicsPerRequest (16).
	MaxTopicsPerRequest int

	// MaxStreams is the most streams the Handler serves at once; a request
	// past it is refused with 503 Service Unavailable (which a browser's
	// EventSource takes as final: it does not reconnect). Default
	// DefaultMaxStreams (10,000).
	MaxStreams int

	// Buffer is the number of events that may wait for one client. A
	// client that falls a whole buffer behind is disconnected (see Handler):
	// it never holds up the other streams, nor the Subscriber. Default
	// DefaultBuffer (64).
	Buffer int

	// Heartbeat is the interval of the comment line ": ping" that keeps an
	// idle stream open through proxies (and reveals a client that is gone).
	// Default DefaultHeartbeat (15 s); negative turns heartbeats off.
	Heartbeat time.Duration

	// WriteTimeout bounds each write of a stream (events, heartbeat), where
	// the ResponseWriter supports deadlines (net/http's does): a client
	// whose connection accepts nothing for that long is disconnected like
	// one that fell a buffer behind. Default DefaultWriteTimeout (10 s);
	// negative means no deadline.
	WriteTimeout time.Duration

	// Retry, when positive, is sent at the start of each stream as the
	// "retry:" field: the delay, in whole milliseconds, after which a
	// browser's EventSource reconnects once the stream ended. Default 0:
	// not sent (browsers wait about 3 s).
	Retry time.Duration

	// Logger logs refused requests (debug), streams that end because of a
	// slow client or a failed write (info), subscribe failures (error).
	// Default watermill.NopLogger.
	Logger watermill.LoggerAdapter
}

func (c *Config) setDefaults() {
	if c.MaxTopicsPerRequest == 0 {
		c.MaxTopicsPerRequest = DefaultMaxTopicsPerRequest
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.Buffer == 0 {
		c.Buffer = DefaultBuffer
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = watermill.NopLogger{}
	}
}

// Validate reports, wrapping ErrInvalidConfig, a negative
// MaxTopicsPerRequest, MaxStreams, Buffer or Retry. A missing Authorize is
// not an error (see Authorize).
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.MaxTopicsPerRequest < 0:
		return fmt.Errorf("%w: Config.MaxTopicsPerRequest must not be negative, got %d", ErrInvalidConfig, c.MaxTopicsPerRequest)
	case c.MaxStreams < 0:
		return fmt.Errorf("%w: Config.MaxStreams must not be negative, got %d", ErrInvalidConfig, c.MaxStreams)
	case c.Buffer < 0:
		return fmt.Errorf("%w: Config.Buffer must not be negative, got %d", ErrInvalidConfig, c.Buffer)
	case c.Retry < 0:
		return fmt.Errorf("%w: Config.Retry must not be negative, got %v", ErrInvalidConfig, c.Retry)
	}
	return nil
}
