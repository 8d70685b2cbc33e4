package redispubsub

import "errors"

// Errors that callers may test with errors.Is.
var (
	// ErrPublisherClosed is returned by Publish after Close.
	ErrPublisherClosed = errors.New("redispubsub: publisher closed")
	// ErrSubscriberClosed is returned by Subscribe, SubscribePattern and
	// SubscribeInitialize after Close.
	ErrSubscriberClosed = errors.New("redispubsub: subscriber closed")
	// ErrSubscribeTimeout is returned by Subscribe when Redis did not confirm
	// the subscription within SubscriberConfig.SubscribeTimeout, for example
	// because the server is unreachable.
	ErrSubscribeTimeout = errors.New("redispubsub: subscription not confirmed by Redis in time")
	// ErrInvalidConfig is wrapped by every error that Validate returns.
	ErrInvalidConfig = errors.New("redispubsub: invalid config")
)
