package redispubsub

import "errors"

// Errors that callers may test with errors.Is.
var (
	// ErrPublisherClosed is returned by Publish after Close.
	ErrPublisherClosed = errors.New("redispubsub: publisher closed")
	// ErrSubscriberClosed is returned by Subscribe, SubscribePattern and
	// SubscribeInitialize after Close.
	ErrSubscriberClosed = errors.New("redispubsub: subscriber closed")
	// ErrSubscribeTimeout is wrapped by the error of Subscribe,
	// SubscribePattern and SubscribeInitialize when Redis did not confirm
	// the subscription within SubscriberConfig.SubscribeTimeout, for example
	// because the server is unreachable; the error names the topic and, if
	// the connection is down, the last connection error.
	ErrSubscribeTimeout = errors.New("redispubsub: subscription not confirmed by Redis in time")
	// ErrInvalidConfig is wrapped by every error that Validate returns.
	ErrInvalidConfig = errors.New("redispubsub: invalid config")
)

// Errors of subscriptions that Redis refuses.
var (
	// ErrSubscriptionRefused is wrapped by the error of a Subscribe whose
	// channel or pattern Redis refused (an ACL without it: NOPERM), with
	// Redis's words. The other subscriptions of the Subscriber go on.
	ErrSubscriptionRefused = errors.New("redispubsub: Redis refused the subscription")
	// ErrConnectionRefused is wrapped by the error of a Subscribe that
	// cannot succeed by retrying: Redis refused the credentials
	// (WRONGPASS) or TLS refused a certificate. The Subscriber keeps
	// retrying with backoff in case the cause is fixed.
	ErrConnectionRefused = errors.New("redispubsub: connection refused for good")
	// ErrShardedPattern is wrapped by the error of SubscribePattern in
	// sharded mode: Redis has no sharded patterns.
	ErrShardedPattern = errors.New("redispubsub: SubscribePattern is not available in sharded mode")
)

// Errors of messages that are not published.
var (
	// ErrMessageTooLarge is wrapped by the error of a Publish call with a
	// message whose encoded body is larger than
	// PublisherConfig.MaxMessageBytes; the error names the message's UUID,
	// its size and the limit. Nothing of the call was sent.
	ErrMessageTooLarge = errors.New("redispubsub: message too large")
	// ErrPublishRefused is wrapped by the error of a Publish call whose
	// channel Redis refused (an ACL without it, or without the PUBLISH or
	// SPUBLISH command: NOPERM), with the channel and Redis's words. Redis
	// refuses a channel as a whole, so no message of the call was
	// published; the calls of other callers are not affected.
	ErrPublishRefused = errors.New("redispubsub: Redis refused to publish")
)
