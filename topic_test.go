package redispubsub_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

func TestTopic(t *testing.T) {
	for _, c := range []struct{ eventType, id, topic string }{
		{"call.responded", "uuid-123", "call.responded:uuid-123"},
		{"user.created", "", "user.created"},
		{"a", "b:c", "a:b:c"},
		{"é", "日本", "é:日本"},
		{"a", ":", "a::"},
	} {
		topic, err := redispubsub.Topic(c.eventType, c.id)
		require.NoError(t, err)
		assert.Equal(t, c.topic, topic)

		eventType, id := redispubsub.SplitTopic(topic)
		assert.Equal(t, c.eventType, eventType, topic)
		assert.Equal(t, c.id, id, topic)
	}
}

func TestTopicRejectsInvalidEventType(t *testing.T) {
	for _, eventType := range []string{"", ":", "a:b", "a:", ":a"} {
		_, err := redispubsub.Topic(eventType, "id")
		require.ErrorIs(t, err, redispubsub.ErrInvalidEventType, "%q", eventType)
		_, err = redispubsub.Topic(eventType, "")
		require.ErrorIs(t, err, redispubsub.ErrInvalidEventType, "%q", eventType)
	}
}

func TestSplitTopic(t *testing.T) {
	for _, c := range []struct{ topic, eventType, id string }{
		{"call.responded:uuid-123", "call.responded", "uuid-123"},
		{"call.responded", "call.responded", ""},
		{"a:b:c", "a", "b:c"},
		{"a:", "a", ""},
		{":b", "", "b"},
		{"", "", ""},
	} {
		eventType, id := redispubsub.SplitTopic(c.topic)
		assert.Equal(t, c.eventType, eventType, c.topic)
		assert.Equal(t, c.id, id, c.topic)
	}
}
