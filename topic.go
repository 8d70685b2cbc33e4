package redispubsub

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidEventType is wrapped by the error Topic returns for an event type
// that is empty or contains ':'.
var ErrInvalidEventType = errors.New("redispubsub: invalid event type")

// topicSeparator separates the event type from the id in a topic.
const topicSeparator = ":"

// Topic returns the topic of an event: eventType when id is empty, else
// eventType + ":" + id (Topic("call.responded", "uuid-123") is
// "call.responded:uuid-123"). The id may contain ':'; SplitTopic gives back
// eventType and id unchanged for every topic Topic returns.
//
// It returns an error wrapping ErrInvalidEventType when eventType is empty or
// contains ':'.
func Topic(eventType, id string) (string, error) {
	if eventType == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidEventType)
	}
	if strings.Contains(eventType, topicSeparator) {
		return "", fmt.Errorf("%w: %q contains %q", ErrInvalidEventType, eventType, topicSeparator)
	}
	if id == "" {
		return eventType, nil
	}
	return eventType + topicSeparator + id, nil
}

// SplitTopic splits topic at its first ':' into the event type and the id.
// A topic without ':' is an event type with an empty id. It never fails: a
// topic that Topic would not produce (such as "" or ":x") splits all the same.
func SplitTopic(topic string) (eventType, id string) {
	eventType, id, _ = strings.Cut(topic, topicSeparator)
	return eventType, id
}
