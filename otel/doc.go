// Package redispubsubotel carries OpenTelemetry traces across Redis Pub/Sub
// (or any Watermill Pub/Sub): a producer span per published message whose
// context travels in the message's metadata, and a consumer span, its
// child, wherever the message is handled: in a Watermill router, in a plain
// Subscribe loop or in an EventTarget's listeners. The trace context is
// written with a TextMapPropagator (W3C trace context and baggage by
// default: the metadata keys "traceparent", "tracestate" and "baggage"), so
// a TypeScript peer that reads or writes the same keys in the envelope's
// metadata continues the trace, in both directions.
//
// It is a module of its own, github.com/alkdev/watermill-redispubsub/otel,
// so that the core module does not depend on OpenTelemetry:
//
//	tracing := redispubsubotel.New() // the global TracerProvider; see the options
//
//	pub = tracing.Publisher(pub)           // a span per message, context into its metadata
//	router.AddMiddleware(tracing.Middleware) // first, so that Retry and PoisonQueue run inside it
//	target, err := redispubsub.NewEventTarget[T](pub, sub, tracing.EventTargetOption())
//
//	for msg := range messages { // a consumer without a router
//		ctx, span := tracing.StartConsumerSpan(topic, msg)
//		err := handle(ctx, msg)
//		redispubsubotel.EndSpan(span, err)
//		msg.Ack()
//	}
//
// The consumer span's parent is the producer span (the context extracted
// from the metadata), as the OpenTelemetry messaging conventions allow for
// a message processed on its own; a message that carries no trace context
// starts a new trace (unless its context already holds a span). Spans and
// attributes follow the messaging semantic conventions: kind producer,
// "send <destination>", and kind consumer, "process <destination>", with
// messaging.system ("redis" by default), messaging.destination.name (the
// Watermill topic, not the Redis channel: the ChannelPrefix is not in it),
// messaging.destination.template ("type:{id}" for a topic "type:id", also
// the span name's destination), messaging.operation.type and .name
// ("send", "process"), messaging.message.id (the Watermill UUID) and
// messaging.message.body.size (the length of the Watermill payload, not of
// the envelope on the wire). A failed publish or handler sets the span's
// status to Error with the error recorded and error.type set.
//
// Only the trace context keys are written to the metadata: the adapter's
// sequence stamp and recovery position (rps_*) are left as they are.
//
// A message published with RawJSONMarshaler carries no metadata on the wire
// (its body is the payload alone, as graphql-yoga's createPubSub sends it),
// so its trace cannot cross Redis: its producer span is recorded, and its
// consumer starts a new trace.
package redispubsubotel
