package bench

import (
	"context"
	"slices"

	"github.com/redis/go-redis/v9"
)

// Ids of the systems, the columns of the table.
const (
	sysRaw            = "go-redis"
	sysAdapter        = "adapter"
	sysAdapterRawJSON = "adapter-rawjson"
	sysAdapterMsgpack = "adapter-msgpack"
	sysRedisStream    = "redisstream"
	sysGoChannel      = "gochannel"
)

// System is one column of the table.
type System struct {
	// ID selects it in Config.Systems.
	ID string
	// Title heads its column.
	Title string
}

// system is a System and the way to open it.
type system struct {
	id, title string
	// open opens a fresh instance for one measurement on the target, with
	// clients of its own; transport.close closes them.
	open func(Config, target) (transport, error)
}

// target is the Redis a system is opened on.
type target struct {
	// newClient returns a new client of it: Config.NewClient, or
	// Config.NewClusterClient.
	newClient func() redis.UniversalClient
	// sharded: SPUBLISH and SSUBSCRIBE (the systems of the cluster case).
	sharded bool
}

// systems are the systems in table order. The first is the yardstick of
// the ratio column, the second its subject.
var systems = []system{
	{sysRaw, "raw go-redis", openRaw},
	{sysAdapter, "adapter (envelope)", openAdapter(envelope)},
	{sysAdapterRawJSON, "adapter (rawjson)", openAdapter(rawJSON)},
	{sysAdapterMsgpack, "adapter (msgpack)", openAdapter(msgpack)},
	{sysRedisStream, "redisstream", openRedisStream},
	{sysGoChannel, "gochannel", openGoChannel},
}

// SystemIDs returns the ids of the systems, in table order:
//
//   - go-redis: raw go-redis, the yardstick: pipelined PUBLISH, and one
//     PubSub read with ReceiveMessage; in the cluster case also SPUBLISH,
//     and a PubSub per node with an SSUBSCRIBE per channel.
//   - adapter: this module's Publisher and Subscriber with the default
//     JSONEnvelopeMarshaler; adapter-rawjson and adapter-msgpack: with
//     RawJSONMarshaler and MsgpackMarshaler.
//   - redisstream: watermill-redisstream, with a consumer group.
//   - gochannel: Watermill's in-process GoChannel, the ceiling of Watermill's
//     Ack contract without a network.
func SystemIDs() []string {
	ids := make([]string, len(systems))
	for i, s := range systems {
		ids[i] = s.id
	}
	return ids
}

func selectedSystems(ids []string) []System {
	var out []System
	for _, s := range systems {
		if slices.Contains(ids, s.id) {
			out = append(out, System{ID: s.id, Title: s.title})
		}
	}
	return out
}

// transport is what a measurement does with a system. Topics are given
// without Config.Prefix; each transport applies it as its system does.
type transport interface {
	// publish sends n messages carrying payload on topic in one call (one
	// pipeline for raw go-redis), returning once the server took them.
	publish(ctx context.Context, topic string, payload []byte, n int) error
	// consume subscribes to topics and returns once every subscription is
	// live; it then calls onMsg for every message received, after its Ack,
	// from one goroutine per subscription (one in all for a single topic).
	// stop ends the subscriptions and waits for those goroutines.
	consume(ctx context.Context, topics []string, onMsg func()) (stop func(), err error)
	// prepareTopics readies, without subscribing yet, the subscription of
	// every topic, from workers goroutines at a time where the system
	// subscribes one topic per call; with eventTarget, as listeners of an
	// EventTarget where the system has one.
	prepareTopics(topics []string, workers int, eventTarget bool) (topicSet, error)
	// diagnose says what the system counted that may explain a failure
	// (drops, decode failures); "" when nothing.
	diagnose() string
	close() error
}

// topicSet is a set of topics subscribed by subscribeAll and released by
// close.
type topicSet interface {
	// subscribeAll subscribes every topic and returns once all are live.
	subscribeAll(ctx context.Context) error
	// close ends every subscription and waits until they are gone.
	close() error
}
