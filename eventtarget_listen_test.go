package redispubsub_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// A reader that does not read loses the events past its buffer, each counted
// and reported; the events in the buffer stay readable after ctx ended, and
// the channel is closed then.
func TestListen_DropsPastTheBufferCountedAndReported(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	gc := newGoChannel(t, false) // DispatchEvent returns once the listener ran
	var reported atomic.Int64
	target, err := redispubsub.NewEventTarget[testPayload](gc, gc, redispubsub.WithErrorHandler(func(topic string, err error) {
		if topic == "seq.sent:a" && errors.Is(err, redispubsub.ErrEventDropped) {
			reported.Add(1)
		}
	}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Close() })

	ctx, cancel := context.WithCancel(testutil.Context(t))
	var dropped atomic.Uint64
	events, err := redispubsub.Listen(ctx, target, "seq.sent:a", redispubsub.ListenBuffer(2), redispubsub.ListenDropCounter(&dropped))
	require.NoError(t, err)
	for seq := 1; seq <= 5; seq++ {
		require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[testPayload]{Type: "seq.sent", ID: "a", Payload: testPayload{Seq: seq}}))
	}
	assert.Equal(t, uint64(3), dropped.Load())
	assert.Equal(t, int64(3), reported.Load())

	cancel()
	var got []int
	for ev := range events { // closed once ctx ended
		assert.Equal(t, "seq.sent", ev.Type)
		assert.Equal(t, "a", ev.ID)
		got = append(got, ev.Payload.Seq)
	}
	assert.Equal(t, []int{1, 2}, got)
}

// The default buffer holds DefaultListenBuffer events, none dropped; an ended ctx is
// returned as the error and nothing is subscribed.
func TestListen_DefaultBufferAndEndedContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	gc := newGoChannel(t, false)
	target, err := redispubsub.NewEventTarget[testPayload](gc, gc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Close() })

	ctx, cancel := context.WithCancel(testutil.Context(t))
	events, err := redispubsub.Listen(ctx, target, "seq.sent")
	require.NoError(t, err)
	for seq := 1; seq <= redispubsub.DefaultListenBuffer; seq++ {
		require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[testPayload]{Type: "seq.sent", Payload: testPayload{Seq: seq}}))
	}
	assert.Len(t, events, redispubsub.DefaultListenBuffer)
	cancel()
	n := 0
	for range events {
		n++
	}
	assert.Equal(t, redispubsub.DefaultListenBuffer, n)

	_, err = redispubsub.Listen(ctx, target, "seq.sent")
	assert.ErrorIs(t, err, context.Canceled)
}
