package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

const defaultURL = "redis://127.0.0.1:6379"

// options are the flags every command takes.
type options struct {
	url       string
	prefix    string
	marshaler string
	timeout   time.Duration
	verbose   bool
}

func defaultOptions() options {
	o := options{url: defaultURL, marshaler: "envelope", timeout: 5 * time.Second}
	if u := os.Getenv("REDIS_URL"); u != "" {
		o.url = u
	}
	return o
}

// register adds the flags to fs, with the values o has now as defaults, so
// that a flag given before the command carries over to the command's flags.
func (o *options) register(fs *flag.FlagSet) {
	fs.Var((*urlFlag)(&o.url), "u", "Redis `URL`, redis://[user:password@]host:port[/db] or rediss:// for TLS; $REDIS_URL if set")
	fs.StringVar(&o.prefix, "prefix", o.prefix, "channel `prefix` of the Publishers and Subscribers, e.g. myapp:events:")
	fs.StringVar(&o.marshaler, "marshaler", o.marshaler, "body format: envelope, rawjson or msgpack")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "bound of connecting to Redis and of each command")
	fs.BoolVar(&o.verbose, "v", o.verbose, "show the adapter's own log lines on stderr")
}

// urlFlag is the -u flag: its String, which --help shows as the default,
// hides the password.
type urlFlag string

func (u *urlFlag) String() string     { return redact(string(*u)) }
func (u *urlFlag) Set(v string) error { *u = urlFlag(v); return nil }

// marshalers are the values of --marshaler.
var marshalers = map[string]redispubsub.Marshaler{
	"envelope": redispubsub.JSONEnvelopeMarshaler{},
	"rawjson":  redispubsub.RawJSONMarshaler{},
	"msgpack":  redispubsub.MsgpackMarshaler{},
}

// check reports a usage error in the options.
func (o *options) check() error {
	if _, ok := marshalers[o.marshaler]; !ok {
		return fmt.Errorf("unknown marshaler %q: want envelope, rawjson or msgpack", o.marshaler)
	}
	if o.timeout <= 0 {
		return errors.New("--timeout must be positive")
	}
	if _, err := redis.ParseURL(o.url); err != nil {
		return fmt.Errorf("-u %s: %v", redact(o.url), urlError(err))
	}
	return nil
}

// marshalerValue returns the Marshaler that --marshaler names (after check).
func (o *options) marshalerValue() redispubsub.Marshaler { return marshalers[o.marshaler] }

// connect returns a client of the Redis that o names (after check), once a
// PING was answered within the timeout. Its errors name the URL without its
// password.
func (o *options) connect(ctx context.Context) (*redis.Client, error) {
	opts, err := redis.ParseURL(o.url)
	if err != nil {
		return nil, fmt.Errorf("-u %s: %v", redact(o.url), urlError(err))
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = o.timeout
	}
	opts.ContextTimeoutEnabled = true
	if !o.verbose {
		redis.SetLogger(quiet{}) // go-redis logs every failed dial; the error says it once
	}
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", redact(o.url), err)
	}
	return client, nil
}

// logger returns the adapter's logger: silent, or Info and up on w with -v.
func (o *options) logger(w io.Writer) watermill.LoggerAdapter {
	if !o.verbose {
		return nil
	}
	return watermill.NewSlogLogger(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})))
}

// quiet is a go-redis logger that prints nothing.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// redact returns raw with its password, if any, replaced by "xxxxx". Of a
// URL that does not parse, it hides everything between "://" and the last
// "@".
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if at := strings.LastIndex(rest, "@"); ok && at >= 0 {
		return scheme + "://xxxxx" + rest[at:]
	}
	return raw
}

// urlError returns the error of parsing a URL without the URL, which
// net/url puts in its errors, password included.
func urlError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
