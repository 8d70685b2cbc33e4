package redispubsub

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// pubsubClient opens the Pub/Sub connections of one connection. For the
// clients it knows (*redis.Client, plain or failover, and
// *redis.ClusterClient) it is a private copy of the user's client whose
// dialer counts the bytes read, so that the health check sees a large
// message arriving as activity, not silence. Its pool holds only the Pub/Sub
// connection; the user's hooks are not applied to it.
type pubsubClient struct {
	open  func(ctx context.Context) *redis.PubSub
	close func()
	// activity grows with every byte read (when counted) and every reply.
	activity atomic.Uint64

	// conns are the open sockets of the private client, for abort.
	mu    sync.Mutex
	conns map[*countingConn]struct{}
}

func newPubsubClient(client redis.UniversalClient) *pubsubClient {
	pc := &pubsubClient{}
	switch client := client.(type) {
	case *redis.Client:
		opts := *client.Options()
		opts.Dialer = pc.counting(opts.Dialer, opts.TLSConfig, opts.DialTimeout)
		opts.PushNotificationProcessor, opts.MaintNotificationsConfig = nil, noMaintNotifications()
		private := redis.NewClient(&opts)
		pc.open = func(ctx context.Context) *redis.PubSub { return private.Subscribe(ctx) }
		pc.close = func() { _ = private.Close() }
	case *redis.ClusterClient:
		opts := *client.Options()
		opts.Dialer = pc.counting(opts.Dialer, opts.TLSConfig, opts.DialTimeout)
		opts.PushNotificationProcessor, opts.MaintNotificationsConfig = nil, noMaintNotifications()
		private := redis.NewClusterClient(&opts)
		pc.open = func(ctx context.Context) *redis.PubSub { return private.Subscribe(ctx) }
		pc.close = func() { _ = private.Close() }
	default:
		pc.open = func(ctx context.Context) *redis.PubSub { return client.Subscribe(ctx) }
		pc.close = func() {}
	}
	return pc
}

// nodeClient returns a pubsubClient for one node of a cluster, with the
// cluster's options.
func nodeClient(cluster *redis.ClusterOptions, addr string) *pubsubClient {
	pc := &pubsubClient{}
	opts := &redis.Options{
		Addr:                     addr,
		Protocol:                 cluster.Protocol,
		Username:                 cluster.Username,
		Password:                 cluster.Password,
		CredentialsProvider:      cluster.CredentialsProvider,
		ClientName:               cluster.ClientName,
		TLSConfig:                cluster.TLSConfig,
		DialTimeout:              cluster.DialTimeout,
		ReadTimeout:              cluster.ReadTimeout,
		WriteTimeout:             cluster.WriteTimeout,
		ContextTimeoutEnabled:    cluster.ContextTimeoutEnabled,
		PoolSize:                 1,
		OnConnect:                cluster.OnConnect,
		MaintNotificationsConfig: noMaintNotifications(),
	}
	opts.Dialer = pc.counting(cluster.Dialer, cluster.TLSConfig, cluster.DialTimeout)
	private := redis.NewClient(opts)
	pc.open = func(ctx context.Context) *redis.PubSub { return private.Subscribe(ctx) }
	pc.close = func() { _ = private.Close() }
	return pc
}

// noMaintNotifications turns off go-redis's handling of a server's
// maintenance notifications (MOVING) on the Pub/Sub connection: it would
// reconnect and resubscribe behind the connection's back.
func noMaintNotifications() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// counting wraps dial (go-redis's default dialer when nil) so that every
// byte read counts as activity.
func (pc *pubsubClient) counting(dial dialFunc, tlsConfig *tls.Config, timeout time.Duration) dialFunc {
	if dial == nil {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := &net.Dialer{Timeout: cmp.Or(timeout, 5*time.Second), KeepAlive: 5 * time.Minute}
			if tlsConfig == nil {
				return d.DialContext(ctx, network, addr)
			}
			td := &tls.Dialer{NetDialer: d, Config: tlsConfig}
			return td.DialContext(ctx, network, addr)
		}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc := &countingConn{Conn: conn, pc: pc}
		pc.mu.Lock()
		if pc.conns == nil {
			pc.conns = make(map[*countingConn]struct{})
		}
		pc.conns[cc] = struct{}{}
		pc.mu.Unlock()
		return cc, nil
	}
}

// abort closes the sockets of the private client, so that a command being
// written on a socket that takes no more bytes fails at once: go-redis's
// PubSub.Close waits for it, up to the client's WriteTimeout (or for ever
// without one). It does nothing for a client that is not private. (The
// failed command makes go-redis's PubSub redial, as any failed command does;
// the connection closes that PubSub next.)
func (pc *pubsubClient) abort() {
	pc.mu.Lock()
	conns := make([]*countingConn, 0, len(pc.conns))
	for cc := range pc.conns {
		conns = append(conns, cc)
	}
	pc.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	pc *pubsubClient
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.pc.activity.Add(uint64(n))
	}
	return n, err
}

func (c *countingConn) Close() error {
	c.pc.mu.Lock()
	delete(c.pc.conns, c)
	c.pc.mu.Unlock()
	return c.Conn.Close()
}

// isPermanent reports whether retrying cannot heal err: Redis refused the
// credentials or a permission, or TLS refused a certificate.
func isPermanent(err error) bool {
	var redisErr redis.Error
	if errors.As(err, &redisErr) {
		msg := redisErr.Error()
		for _, prefix := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH", "ERR invalid password", "ERR Client sent AUTH"} {
			if strings.HasPrefix(msg, prefix) {
				return true
			}
		}
		return false
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

// isMoved reports whether err is Redis's MOVED redirection.
func isMoved(err error) bool {
	return strings.HasPrefix(err.Error(), "MOVED ")
}
