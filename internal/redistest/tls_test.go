package redistest_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// pingTLS pings srv once, without retries, with the given TLS config.
func pingTLS(t *testing.T, srv *redistest.Server, conf *tls.Config) error {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), TLSConfig: conf, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	return c.Ping(ctx(t)).Err()
}

func TestTLS(t *testing.T) {
	t.Parallel()
	t.Run("client certificates required", func(t *testing.T) {
		t.Parallel()
		srv := redistest.StartTLS(t, true)
		certs := srv.Certs()
		require.NotNil(t, certs)
		require.NoError(t, srv.NewClient(t).Ping(ctx(t)).Err())
		require.NoError(t, pingTLS(t, srv, certs.ClientTLS()))
		for name, conf := range map[string]*tls.Config{
			"no client certificate":                   certs.ClientTLSNoCert(),
			"client certificate of another authority": certs.UntrustedClientTLS(),
			"plain TCP": nil,
		} {
			err := pingTLS(t, srv, conf)
			assert.Error(t, err, name)
			t.Logf("%s: %v", name, err)
		}

		err := pingTLS(t, srv, certs.WrongCATLS())
		var unknown x509.UnknownAuthorityError
		var verr *tls.CertificateVerificationError
		require.True(t, errors.As(err, &unknown) || errors.As(err, &verr), "got %v", err)
		assert.ErrorContains(t, err, "unknown authority")
		t.Logf("wrong authority: %v", err)

		srv.Kill()
		srv.Restart()
		require.NoError(t, pingTLS(t, srv, certs.ClientTLS()), "TLS again after Restart")
	})
	t.Run("client certificates optional", func(t *testing.T) {
		t.Parallel()
		srv := redistest.StartTLS(t, false)
		certs := srv.Certs()
		require.NoError(t, pingTLS(t, srv, certs.ClientTLS()))
		require.NoError(t, pingTLS(t, srv, certs.ClientTLSNoCert()))
		assert.ErrorContains(t, pingTLS(t, srv, certs.WrongCATLS()), "unknown authority")
		assert.Error(t, pingTLS(t, srv, nil), "plain TCP")
	})
	t.Run("no TLS", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t)
		assert.Nil(t, srv.Certs())
		assert.Nil(t, srv.TLSConfig())
	})
}

func TestACL(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	srv.CreateUser(t, "app", "secret", "&myapp:*", "+publish", "+subscribe", "+ping")
	user := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "app", Password: "secret", MaxRetries: -1})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	c := user()
	require.NoError(t, c.Publish(ctx(t), "myapp:x", "m").Err())
	assert.ErrorContains(t, c.Publish(ctx(t), "other:x", "m").Err(), "NOPERM")
	assert.ErrorContains(t, c.Set(ctx(t), "k", "v", 0).Err(), "NOPERM")

	wrong := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "app", Password: "wrong", MaxRetries: -1})
	t.Cleanup(func() { _ = wrong.Close() })
	assert.ErrorContains(t, wrong.Ping(ctx(t)).Err(), "WRONGPASS")

	t.Run("revoke disconnects a subscriber", func(t *testing.T) {
		ps := user().Subscribe(ctx(t), "myapp:events")
		t.Cleanup(func() { _ = ps.Close() })
		_, err := ps.Receive(ctx(t))
		require.NoError(t, err)
		assert.Equal(t, []any{"myapp:events", int64(1)}, srv.Do(t, "PUBSUB", "NUMSUB", "myapp:events"))

		srv.RevokeChannels(t, "app")
		_, err = ps.Receive(ctx(t))
		require.Error(t, err, "Redis closed the connection")
		assert.Equal(t, []any{"myapp:events", int64(0)}, srv.Do(t, "PUBSUB", "NUMSUB", "myapp:events"))
		assert.ErrorContains(t, c.Publish(ctx(t), "myapp:x", "m").Err(), "NOPERM")

		srv.SetUser(t, "app", "&myapp:*")
		require.NoError(t, c.Publish(ctx(t), "myapp:x", "m").Err(), "granted again")
	})
	t.Run("delete disconnects every client", func(t *testing.T) {
		require.NoError(t, c.Ping(ctx(t)).Err())
		srv.DeleteUser(t, "app")
		assert.Error(t, c.Ping(ctx(t)).Err(), "connection closed by Redis")
		assert.ErrorContains(t, c.Ping(ctx(t)).Err(), "WRONGPASS", "the user is gone")
	})
}
