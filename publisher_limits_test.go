package redispubsub_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// jsonStringMsg returns a message whose payload is a JSON string of n bytes
// in all.
func jsonStringMsg(n int) *message.Message {
	return message.NewMessage(watermill.NewUUID(), []byte(`"`+strings.Repeat("a", n-2)+`"`))
}

// rawSubscribe subscribes a raw go-redis client to channels and waits for
// Redis's confirmations.
func rawSubscribe(t *testing.T, client *redis.Client, channels ...string) *redis.PubSub {
	t.Helper()
	ctx := testutil.Context(t)
	ps := client.Subscribe(ctx, channels...)
	t.Cleanup(func() { _ = ps.Close() })
	for range channels {
		reply, err := ps.Receive(ctx)
		require.NoError(t, err)
		require.IsType(t, &redis.Subscription{}, reply)
	}
	return ps
}

// A message larger than Redis's default Pub/Sub output-buffer hard limit
// (32 MB) would get every subscriber of its channel disconnected: with the
// default config the Publisher refuses it, and sends nothing of its call.
func TestPublishRefusesMessageOverRedisOutputBufferLimit(t *testing.T) {
	srv := redistest.Start(t)
	ps := rawSubscribe(t, srv.NewClient(t), "big")
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, nil)
	require.NoError(t, err)
	defer pub.Close()

	huge := jsonStringMsg(33 << 20)
	err = pub.Publish("big", jsonMsg(0), huge)
	require.ErrorIs(t, err, redispubsub.ErrMessageTooLarge)
	require.ErrorContains(t, err, huge.UUID)
	require.ErrorContains(t, err, strconv.Itoa(redispubsub.DefaultMaxMessageBytes), "names the limit")
	require.Regexp(t, `is 3460\d{4} bytes`, err.Error(), "names the size")
	require.EqualValues(t, 2, pub.Stats().Failed)

	require.NoError(t, pub.Publish("big", jsonMsg(1)))
	require.Equal(t, 1, rawN(t, receiveRaw(t, ps)), "nothing of the refused call was sent")
	require.EqualValues(t, 1, commandCalls(t, srv, "publish"))
}

func TestPublishMaxMessageBytes(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.NewClient(t)
	ps := rawSubscribe(t, client, "t")

	t.Run("limit", func(t *testing.T) {
		pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, MaxMessageBytes: 300}, nil)
		require.NoError(t, err)
		defer pub.Close()
		tooLarge := jsonStringMsg(300)
		err = pub.Publish("t", jsonMsg(0), tooLarge)
		require.ErrorIs(t, err, redispubsub.ErrMessageTooLarge)
		require.ErrorContains(t, err, tooLarge.UUID)
		require.ErrorContains(t, err, "MaxMessageBytes is 300")
		require.NoError(t, pub.Publish("t", jsonMsg(1)), "a body within the limit goes")
		require.Equal(t, 1, rawN(t, receiveRaw(t, ps)))
	})
	t.Run("none", func(t *testing.T) {
		pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, MaxMessageBytes: -1}, nil)
		require.NoError(t, err)
		defer pub.Close()
		large := jsonStringMsg(redispubsub.DefaultMaxMessageBytes + 1)
		require.NoError(t, pub.Publish("t", large))
		msg, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal("t", []byte(receiveRaw(t, ps).Payload))
		require.NoError(t, err)
		require.Equal(t, large.UUID, msg.UUID)
		require.Len(t, msg.Payload, redispubsub.DefaultMaxMessageBytes+1)
	})
}
