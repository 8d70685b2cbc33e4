package redispubsub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// This file is the seam between a connection and the network: dialFunc
// opens a socket that go-redis dialed and authenticated; from then on the
// connection alone reads and writes it, in RESP (resp.go). A unit test
// passes a dialFunc that returns one end of a net.Pipe.

// dialFunc opens a Pub/Sub socket: connected, authenticated, its database
// and client name set, and nothing pending on it. Closing it releases
// whatever it took to dial it.
type dialFunc func(ctx context.Context) (net.Conn, error)

// clientDialer returns the dialFunc of a Subscriber in classic mode, or in
// sharded mode on a single server. On a cluster the connection goes to the
// master that go-redis's slot map gives for key (spreading Subscribers
// over the masters); a failed attempt has go-redis reload its slot map, so
// that the next one follows a failover.
func clientDialer(client redis.UniversalClient, key string) (dialFunc, error) {
	switch client := client.(type) {
	case *redis.Client:
		opts := *client.Options()
		return func(ctx context.Context) (net.Conn, error) { return dialWith(ctx, opts) }, nil
	case *redis.ClusterClient:
		return func(ctx context.Context) (net.Conn, error) {
			node, err := client.MasterForKey(ctx, key)
			if err != nil {
				client.ReloadState(ctx)
				return nil, fmt.Errorf("the cluster's slot map: %w", err)
			}
			conn, err := dialWith(ctx, *node.Options())
			if err != nil {
				client.ReloadState(ctx)
			}
			return conn, err
		}, nil
	}
	return nil, fmt.Errorf("%w: Client: a %T; the Subscriber takes a *redis.Client (plain or failover) or a *redis.ClusterClient", ErrInvalidConfig, client)
}

// nodeDialer returns the dialFunc of one node of a cluster, with every
// option go-redis gives its own client of that node.
func nodeDialer(cluster *redis.ClusterClient, addr string) dialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		// Any node's client carries the options the cluster gives them
		// all but the address (ClusterOptions.NewClient aside: the
		// Subscriber makes its own client, see dialWith).
		template, err := cluster.MasterForKey(ctx, "")
		if err != nil {
			return nil, fmt.Errorf("the cluster's node options: %w", err)
		}
		opts := *template.Options()
		opts.Addr, opts.NodeAddress = addr, addr
		return dialWith(ctx, opts)
	}
}

// dialWith dials and initialises one connection the way go-redis does for
// a client with opts (its dialer, TLS, credentials providers, HELLO or
// AUTH, SELECT, CLIENT SETNAME, OnConnect), on a private client of its own,
// and takes the socket over. The client's hooks do not apply.
func dialWith(ctx context.Context, opts redis.Options) (net.Conn, error) {
	var (
		mu          sync.Mutex
		socket      net.Conn
		initialized bool
	)
	dial := opts.Dialer
	if dial == nil {
		dial = redis.NewDialer(&opts)
	}
	opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err == nil {
			mu.Lock()
			socket = conn
			mu.Unlock()
		}
		return conn, err
	}
	onConnect := opts.OnConnect
	opts.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		if onConnect != nil {
			if err := onConnect(ctx, cn); err != nil {
				return err
			}
		}
		mu.Lock()
		initialized = true
		mu.Unlock()
		return nil
	}
	// One socket, dialed once: a failed attempt is the connection's to
	// retry, with its backoff. (A pool of 2 for one socket: a pool that
	// failed as many dials as it has room for starts a goroutine that
	// probes the server every second, after Close too.)
	opts.PoolSize, opts.MinIdleConns, opts.MaxIdleConns, opts.MaxActiveConns = 2, 0, 1, 2
	opts.MaxRetries, opts.DialerRetries = -1, 1
	// Nothing but the connection may read or write the socket: no
	// maintenance notifications, no client-side cache (its CLIENT TRACKING
	// and invalidation pushes).
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	opts.PushNotificationProcessor = nil
	opts.ClientSideCacheConfig, opts.ClientSideCache = nil, nil

	private := redis.NewClient(&opts)
	held := private.Conn()
	release := func() {
		_ = held.Close()
		_ = private.Close()
	}
	// The PING makes go-redis dial and initialise the socket.
	err := held.Ping(ctx).Err()
	mu.Lock()
	conn, ready := socket, initialized
	mu.Unlock()
	switch {
	case !ready || conn == nil:
		release()
		if err == nil {
			err = errors.New("redispubsub: go-redis did not initialise the connection")
		}
		return nil, err
	case err != nil && !refusedPing(err):
		release()
		return nil, err
	}
	// go-redis leaves the deadlines of its last command on the socket.
	if err := conn.SetDeadline(time.Time{}); err != nil {
		release()
		return nil, err
	}
	return &ownedConn{Conn: conn, release: release}, nil
}

// refusedPing reports whether err is an ACL's refusal of PING alone: the
// connection works, and the health check takes the refusals as answers.
func refusedPing(err error) bool {
	var redisErr redis.Error
	return errors.As(err, &redisErr) && strings.HasPrefix(redisErr.Error(), "NOPERM")
}

// ownedConn is a socket taken over from go-redis: closing it closes the
// private client that dialed it.
type ownedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *ownedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// isPermanent reports whether retrying cannot heal err: Redis refused the
// credentials or a permission, or TLS refused a certificate.
func isPermanent(err error) bool {
	var redisErr redis.Error
	if errors.As(err, &redisErr) {
		return isRefusal(redisErr.Error())
	}
	var (
		unknownAuthority x509.UnknownAuthorityError
		invalid          x509.CertificateInvalidError
		hostname         x509.HostnameError
		verification     *tls.CertificateVerificationError
		alert            tls.AlertError
	)
	return errors.As(err, &unknownAuthority) || errors.As(err, &invalid) || errors.As(err, &hostname) ||
		errors.As(err, &verification) || errors.As(err, &alert) || refusedByServer(err)
}

// isRefusal reports whether a Redis error reply refuses the credentials or
// a permission.
func isRefusal(msg string) bool {
	for _, prefix := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH", "ERR invalid password", "ERR Client sent AUTH"} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// refusalAlerts are the TLS alerts (RFC 8446 section 6) with which a server
// refuses the handshake for good: handshake_failure, bad_certificate,
// unsupported_certificate, certificate_revoked, certificate_expired,
// certificate_unknown, unknown_ca, access_denied, protocol_version and
// certificate_required.
var refusalAlerts = map[uint64]bool{40: true, 42: true, 43: true, 44: true, 45: true, 46: true, 48: true, 49: true, 70: true, 116: true}

// refusedByServer reports whether err carries a TLS alert of refusalAlerts
// that the server sent. crypto/tls reports one as a *net.OpError "remote
// error" around a value of its unexported alert type (a uint8), not as a
// tls.AlertError, which only QUIC uses.
func refusedByServer(err error) bool {
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != "remote error" || opErr.Err == nil {
		return false
	}
	v := reflect.ValueOf(opErr.Err)
	return v.Kind() == reflect.Uint8 && v.Type().PkgPath() == "crypto/tls" && refusalAlerts[v.Uint()]
}
