package redispubsub_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// Validate accepts exactly the configs the constructor accepts: zero values
// mean the defaults. (The bug: Validate on SubscriberConfig{Client: c}
// returned "HealthCheckInterval must be at least 10ms, got 0s" while
// NewSubscriber accepted the same config.) No server is needed: nothing is
// published or subscribed.
func TestConfigValidateAcceptsWhatTheConstructorAccepts(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })

	subscribers := []redispubsub.SubscriberConfig{
		{Client: client},
		{Client: client, ChannelPrefix: "app:", Sharded: true},
		{Client: client, ReconnectBackoffMin: time.Second}, // the maximum defaults to at least the minimum
		{Client: client, NackResendSleep: -1, MaxMessageBytes: -1},
		{Client: client, HealthCheckInterval: time.Second, SubscribeTimeout: time.Second},
		{},
		{Client: client, BufferBytes: -1},
		{Client: client, HealthCheckInterval: time.Millisecond},
	}
	for i, config := range subscribers {
		t.Run(fmt.Sprintf("SubscriberConfig %d", i), func(t *testing.T) {
			sub, err := redispubsub.NewSubscriber(config, nil)
			if err == nil {
				require.NoError(t, sub.Close())
			}
			validated := config.Validate()
			require.Equal(t, err == nil, validated == nil,
				"NewSubscriber(%+v): %v; Validate: %v", config, err, validated)
		})
	}

	publishers := []redispubsub.PublisherConfig{
		{Client: client},
		{Client: client, Sharded: true, MaxMessageBytes: -1},
		{},
	}
	for i, config := range publishers {
		t.Run(fmt.Sprintf("PublisherConfig %d", i), func(t *testing.T) {
			pub, err := redispubsub.NewPublisher(config, nil)
			if err == nil {
				require.NoError(t, pub.Close())
			}
			validated := config.Validate()
			require.Equal(t, err == nil, validated == nil,
				"NewPublisher(%+v): %v; Validate: %v", config, err, validated)
		})
	}
}
