// Package redispubsub is a Watermill Publisher and Subscriber over Redis Pub/Sub
// channels, wire-compatible with the TypeScript Redis event targets
// (@graphql-yoga/redis-event-target), with a typed EventTarget bridge on top of
// any Watermill Pub/Sub.
//
// Redis Pub/Sub is at-most-once: a message published while no subscriber is
// connected is gone. This package does not pretend otherwise; it confirms
// subscriptions before Subscribe returns, reads the socket continuously so
// Redis never disconnects a slow consumer, reconnects and resubscribes by
// itself, and counts every message it drops, fails to decode or never saw.
package redispubsub
