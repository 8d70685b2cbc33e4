package testutil

import (
	"testing"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// Numsub returns what PUBSUB NUMSUB says of channel on srv: the number of
// classic subscriptions to it.
func Numsub(t testing.TB, srv *redistest.Server, channel string) int64 {
	t.Helper()
	return countOf(t, srv.Do(t, "PUBSUB", "NUMSUB", channel), "NUMSUB")
}

// ShardNumsub returns what PUBSUB SHARDNUMSUB says of channel on srv: the
// number of sharded subscriptions to it on that node.
func ShardNumsub(t testing.TB, srv *redistest.Server, channel string) int64 {
	t.Helper()
	return countOf(t, srv.Do(t, "PUBSUB", "SHARDNUMSUB", channel), "SHARDNUMSUB")
}

// countOf returns the count of a [channel, count] reply.
func countOf(t testing.TB, reply any, command string) int64 {
	t.Helper()
	pair, ok := reply.([]any)
	if !ok || len(pair) != 2 {
		t.Fatalf("PUBSUB %s: unexpected reply %#v", command, reply)
	}
	n, ok := pair[1].(int64)
	if !ok {
		t.Fatalf("PUBSUB %s: unexpected reply %#v", command, reply)
	}
	return n
}
