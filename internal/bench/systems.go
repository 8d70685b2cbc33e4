package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Ids of the systems, the columns of the table.
const (
	sysRaw            = "go-redis"
	sysAdapter        = "adapter"
	sysAdapterRawJSON = "adapter-rawjson"
	sysAdapterMsgpack = "adapter-msgpack"
	sysRedisStream    = "redisstream"
	sysNATS           = "nats"
	sysGoChannel      = "gochannel"
	sysHandoff        = "handoff"
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
	// cases, when set, are the only cases that mean something for the
	// system; in the others its cells say "n/a" (where the case runs on
	// every system). nil: every case decides for itself.
	cases []string
	// note explains the system under the table; nil: nothing to add.
	note func(r *runner) string
}

// runs reports whether the system is measured in the case, and, when not,
// whether its cells say "n/a" (rather than nothing: the case leaves it out
// as it leaves out others).
func (s system) runs(spec *caseSpec) (runs, na bool) {
	if s.cases != nil && !slices.Contains(s.cases, spec.id) {
		return false, true
	}
	return spec.runs(s.id), false
}

// target is the Redis a system is opened on (and the nats-server, for
// watermill-nats).
type target struct {
	// newClient returns a new client of it: Config.NewClient, or
	// Config.NewClusterClient.
	newClient func() redis.UniversalClient
	// sharded: SPUBLISH and SSUBSCRIBE (the systems of the cluster case).
	sharded bool
	// natsURL is the client URL of the run's nats-server; "" when it has
	// none.
	natsURL string
	// maxInFlight is the adapter's SubscriberConfig.MaxInFlight; 0: its
	// default (the other systems have no such option).
	maxInFlight int
	// probeInterval is the adapter's SubscriberConfig.ProbeInterval; 0:
	// its default.
	probeInterval time.Duration
}

// systems are the systems in table order. The first is the yardstick of
// the ratio column, the second its subject.
var systems = []system{
	{id: sysRaw, title: "raw go-redis", open: openRaw},
	{id: sysAdapter, title: "adapter (envelope)", open: openAdapter(envelope)},
	{id: sysAdapterRawJSON, title: "adapter (rawjson)", open: openAdapter(rawJSON)},
	{id: sysAdapterMsgpack, title: "adapter (msgpack)", open: openAdapter(msgpack)},
	{id: sysRedisStream, title: "redisstream", open: openRedisStream},
	{id: sysNATS, title: "watermill-nats", open: openNATS, note: natsNote},
	{id: sysGoChannel, title: "gochannel", open: openGoChannel},
	{id: sysHandoff, title: "bare Ack hand-off", open: openHandoff, note: handoffNote,
		cases: []string{"e2e-batch", "e2e-parallel", "latency"}},
}

// handoffNote explains the hand-off's column.
func handoffNote(*runner) string {
	return "*bare Ack hand-off*: the ceiling of Watermill's Ack contract on this machine, no network, no codec: for each " +
		"message message.NewMessage, a context of its own, a send over an unbuffered channel to the one consumer " +
		"goroutine, which Acks it, and the sender waits for Acked() before the next. Every Watermill adapter does at " +
		"least this per message. n/a where it has nothing to do: publish only (nobody subscribed), subscribing, the cluster."
}

// natsNote explains the watermill-nats column: what was measured, or why
// nothing was.
func natsNote(r *runner) string {
	switch {
	case r.nats != nil:
		return fmt.Sprintf("*watermill-nats*: watermill-nats/v2 on core NATS (JetStream off) with its default marshaler "+
			"(payload as the body, UUID and metadata as headers), on a nats-server %s that the run started on a port of "+
			"its own; core NATS confirms neither a subscription nor a publication, so a Flush (PING, PONG) follows "+
			"the Subscribe and the last Publish of publish only.", r.nats.version)
	case errors.Is(r.natsErr, errNATSNotInstalled):
		return "*watermill-nats*: not installed: no nats-server binary was found (Config.NATSServer, default nats-server " +
			"on PATH; Debian: apt-get install nats-server), so its cells say so."
	default:
		return fmt.Sprintf("*watermill-nats*: nats-server did not start: %v", r.natsErr)
	}
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
//   - nats: watermill-nats on core NATS (JetStream off), on a nats-server
//     that Run starts itself (Config.NATSServer); its cells say "not
//     installed" when there is no such binary.
//   - gochannel: Watermill's in-process GoChannel, for reference: the same
//     contract without a network, but not its ceiling: it copies every
//     message and starts two goroutines for it.
//   - handoff: the bare Ack hand-off, the ceiling of Watermill's Ack
//     contract without a network or a codec: message.NewMessage, a context,
//     an unbuffered channel to one consumer goroutine that Acks, the sender
//     waiting for Acked() before the next. Only end to end and latency.
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
	// flush returns once the server has every message that publish
	// returned from (at once where publish waits for the server's reply).
	flush() error
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
