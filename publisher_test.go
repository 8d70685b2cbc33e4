package redispubsub_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// roundTrips counts the commands and pipelines a go-redis client sends.
type roundTrips struct{ single, pipelines, pipelined atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.single.Add(1)
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		h.pipelined.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestPublishSendsOneCallInOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.NewClient(t)
	require.NoError(t, client.Ping(context.Background()).Err()) // dial outside the count
	hook := &roundTrips{}
	client.AddHook(hook)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	defer pub.Close()

	require.NoError(t, pub.Publish("t", jsonMsg(1), jsonMsg(2), jsonMsg(3)))
	require.EqualValues(t, 1, hook.pipelines.Load())
	require.EqualValues(t, 3, hook.pipelined.Load())
	require.Zero(t, hook.single.Load())
	require.Equal(t, redispubsub.PublisherStats{Published: 3, NoSubscribers: 3}, pub.Stats())
}

// The default marshaler carries a payload that is not JSON, byte for byte,
// with its metadata and sequence stamp.
func TestPublishCarriesBinaryPayloadByDefault(t *testing.T) {
	f := newFixture(t, nil)
	ch, _ := testutil.Subscribe(t, f.sub, "t")
	binary := message.NewMessage(watermill.NewUUID(), []byte{0xff, 0x00, 'x'})
	binary.Metadata.Set("k", "v")
	require.NoError(t, f.pub.Publish("t", jsonMsg(1), binary))

	msg := testutil.Receive(t, ch)
	require.JSONEq(t, `{"n":1}`, string(msg.Payload))
	msg.Ack()
	msg = testutil.Receive(t, ch)
	require.Equal(t, binary.UUID, msg.UUID)
	require.Equal(t, []byte{0xff, 0x00, 'x'}, []byte(msg.Payload))
	require.Equal(t, message.Metadata{"k": "v"}, msg.Metadata)
	msg.Ack()
	stats := f.sub.Stats()
	require.Zero(t, stats.DecodeFailures)
	require.Zero(t, stats.Gaps)
}

// RawJSONMarshaler's body is the payload alone, so it refuses a payload that
// is not JSON, and a Publish call with one sends none of its messages.
func TestRawJSONPublishRefusesNonJSONPayloadAndSendsNothing(t *testing.T) {
	raw := redispubsub.RawJSONMarshaler{}
	f := newFixture(t, func(c *redispubsub.SubscriberConfig) { c.Marshaler = raw })
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: f.srv.NewClient(t), Marshaler: raw}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	ch, _ := testutil.Subscribe(t, f.sub, "t")
	binary := message.NewMessage(watermill.NewUUID(), []byte{0xff, 0x00})
	err = pub.Publish("t", jsonMsg(1), binary)
	require.ErrorIs(t, err, redispubsub.ErrPayloadNotJSON)
	require.ErrorContains(t, err, binary.UUID)

	require.NoError(t, pub.Publish("t", jsonMsg(2)))
	msg := testutil.Receive(t, ch)
	require.JSONEq(t, `{"n":2}`, string(msg.Payload), "the valid message of the refused call must not be sent")
	msg.Ack()
}

func TestPublishHonoursMessageContext(t *testing.T) {
	f := newFixture(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	late := jsonMsg(2)
	late.SetContext(ctx)
	err := f.pub.Publish("t", jsonMsg(1), late)
	require.ErrorIs(t, err, context.Canceled)
	require.EqualValues(t, 2, f.pub.Stats().Failed)
	require.Zero(t, f.pub.Stats().Published)
}

func TestPublishReportsUnreachableServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer client.Close()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	defer pub.Close()
	err = pub.Publish("t", jsonMsg(1))
	require.Error(t, err)
	require.ErrorContains(t, err, "1 of 1 messages not sent")
	require.EqualValues(t, 1, pub.Stats().Failed)
}

func TestPublisherCloseIsIdempotentAndKeepsClient(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.NewClient(t)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client}, nil)
	require.NoError(t, err)
	require.NoError(t, pub.Close())
	require.NoError(t, pub.Close())
	require.ErrorIs(t, pub.Publish("t", jsonMsg(1)), redispubsub.ErrPublisherClosed)
	require.NoError(t, client.Ping(context.Background()).Err(), "the user's client must stay open")
}

func TestPublisherConfigValidate(t *testing.T) {
	_, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{}, nil)
	require.ErrorIs(t, err, redispubsub.ErrInvalidConfig)
}

// Publish refuses a topic reserved for the liveness probes, which every
// Subscriber would drop: the error wraps ErrReservedTopic, nothing is sent
// (the client sends no command) and the messages count as Failed.
func TestPublishReservedTopicIsRefused(t *testing.T) {
	var trips roundTrips
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"})
	t.Cleanup(func() { _ = client.Close() })
	client.AddHook(&trips)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: "app:"}, nil)
	require.NoError(t, err)
	defer pub.Close()
	err = pub.Publish(redispubsub.ProbeTopicPrefix+"someone:1", message.NewMessage("a", []byte(`{}`)), message.NewMessage("b", []byte(`{}`)))
	require.ErrorIs(t, err, redispubsub.ErrReservedTopic)
	require.Equal(t, redispubsub.PublisherStats{Failed: 2}, pub.Stats())
	require.Zero(t, trips.single.Load()+trips.pipelines.Load(), "nothing sent")
}
