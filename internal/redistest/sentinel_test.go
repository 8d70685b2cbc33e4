package redistest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 3} {
		t.Run("sentinels="+string(rune('0'+n)), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			sn := redistest.StartSentinel(t, redisproc.SentinelOptions{Sentinels: n})
			t.Logf("StartSentinel took %v", time.Since(start))
			require.Len(t, sn.Servers(), 2)
			require.Len(t, sn.SentinelAddrs(), n)
			assert.Equal(t, "mymaster", sn.FailoverOptions().MasterName)
			assert.Equal(t, sn.SentinelAddrs(), sn.FailoverOptions().SentinelAddrs)
			old := sn.Servers()[0]
			assert.Equal(t, old, sn.Master(t))

			c := sn.NewFailoverClient(t)
			require.NoError(t, c.Set(ctx(t), "k", "v", 0).Err())
			require.Equal(t, int64(1), c.Wait(ctx(t), 1, 5*time.Second).Val(), "WAIT for the replica")
			assert.Equal(t, "v", sn.Servers()[1].Do(t, "GET", "k"), "replicated")

			start = time.Now()
			promoted := sn.KillMaster(t)
			t.Logf("KillMaster took %v", time.Since(start))
			assert.Equal(t, sn.Servers()[1], promoted)
			assert.Equal(t, promoted, sn.Master(t))
			assert.False(t, old.Running())
			assert.Equal(t, "master", promoted.Do(t, "ROLE").([]any)[0])
			require.NoError(t, c.Set(ctx(t), "k", "after failover", 0).Err(), "the failover client follows")
			assert.Equal(t, "after failover", promoted.Do(t, "GET", "k"))

			if n > 1 {
				return // the restart below takes about 8s: once is enough
			}
			old.Restart()
			sn.WaitOK(t)
			assert.Equal(t, "slave", old.Do(t, "ROLE").([]any)[0], "the old master is back as a replica")
		})
	}
}
