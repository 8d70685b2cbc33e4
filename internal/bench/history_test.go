package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// TestRunHistory runs the history rows, tiny and without the anchor, and
// checks that every one of them was measured, raw go-redis's beside the
// adapter's, and that the raw rows' keys are gone afterwards.
func TestRunHistory(t *testing.T) {
	srv := redistest.Start(t)
	newClient := func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: srv.Addr()}) }
	rep, err := RunHistory(context.Background(), HistoryConfig{
		Addr: srv.Addr(), NewClient: newClient, Prefix: "history-test:",
		Duration: 20 * time.Millisecond, Rounds: 2, Publishers: 4, Size: 64, Held: 50,
	})
	require.NoError(t, err)
	for name, v := range map[string]float64{
		"raw": rep.Raw, "raw with history": rep.RawH, "raw end to end": rep.RawE2E, "raw end to end with history": rep.RawE2EH,
		"publish": rep.Publish, "publish with history": rep.PublishH, "end to end": rep.E2E, "end to end with history": rep.E2EH,
		"raw read": rep.RawRead, "read": rep.Read, "recovery": rep.Recovery, "bytes held": rep.BytesHeld, "raw bytes held": rep.RawHeld,
	} {
		assert.Positive(t, v, name)
	}
	var table strings.Builder
	require.NoError(t, rep.WriteTable(&table))
	for _, row := range []string{"| publish (msg/s) |", "| end to end (msg/s) |", "| read the last 50", "| recover 50 missed", "| Redis memory per held message"} {
		assert.Contains(t, table.String(), row)
	}

	client := newClient()
	defer client.Close()
	raw, err := client.Keys(context.Background(), "*raw-*").Result()
	require.NoError(t, err)
	assert.Empty(t, raw, "the raw rows' keys")
}
