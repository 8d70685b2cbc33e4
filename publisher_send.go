package redispubsub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// send publishes a batch in one pipeline and answers every call. Calls whose
// context ended while they waited are not sent.
func (p *Publisher) send(batch []*publishCall) {
	live := make([]*publishCall, 0, len(batch)) // batch stays whole for sent
	for _, call := range batch {
		if call.ctx.Err() != nil {
			call.finish(p, nil, context.Cause(call.ctx))
			continue
		}
		live = append(live, call)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := batchContext(live)
	defer cancel()
	cmds := make([][]*redis.IntCmd, len(live))
	for i, call := range live {
		cmds[i] = make([]*redis.IntCmd, len(call.bodies))
		for j, body := range call.bodies {
			if p.config.History.enabled() {
				cmds[i][j] = p.historyCommand(call.ctx, call.channel, call.historyKeys, body, call.marks[j])
			} else {
				cmds[i][j] = p.publishCommand(call.ctx, call.channel, body)
			}
		}
	}
	var err error
	if len(live) == 1 && len(cmds[0]) == 1 {
		// One message: a plain command costs less than a pipeline of one.
		err = p.config.Client.Process(ctx, cmds[0][0])
	} else {
		_, err = p.config.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, callCmds := range cmds {
				for _, cmd := range callCmds {
					_ = pipe.Process(ctx, cmd)
				}
			}
			return nil
		})
	}
	if p.config.History.enabled() {
		p.retryNoScript(ctx, cmds)
	}
	for i, call := range live {
		call.finish(p, cmds[i], err)
	}
}

// publishCommand returns the PUBLISH (or, sharded, SPUBLISH) of body on
// channel. PUBLISH has no key, so a ClusterClient would send each one to a
// random node, and messages would overtake each other on their way through
// the cluster bus. Hashing the channel as a key sends a channel's messages
// through one node: for SPUBLISH the node that owns the channel's slot, the
// one that accepts it (go-redis would find position 1 by itself from
// COMMAND INFO; saying it spares the lookup).
func (p *Publisher) publishCommand(ctx context.Context, channel string, body []byte) *redis.IntCmd {
	name := "publish"
	if p.config.Sharded {
		name = "spublish"
	}
	cmd := redis.NewIntCmd(ctx, name, channel, body)
	cmd.SetFirstKeyPos(1)
	return cmd
}

// finish counts the replies of one call and wakes its caller with an error
// naming how many messages failed.
func (call *publishCall) finish(p *Publisher, cmds []*redis.IntCmd, pipeErr error) {
	defer close(call.done)
	if cmds == nil {
		p.failed.Add(uint64(len(call.msgs)))
		call.err = fmt.Errorf("redispubsub: publish to %q: nothing sent: %w", call.topic, pipeErr)
		return
	}
	var failed int
	var firstErr error
	var firstUUID string
	for i, cmd := range cmds {
		receivers, err := cmd.Result()
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr, firstUUID = err, call.msgs[i].UUID
			}
			continue
		}
		p.published.Add(1)
		if receivers == 0 {
			p.noSubscribers.Add(1)
		}
	}
	if failed == 0 {
		return
	}
	p.failed.Add(uint64(failed))
	p.logger.Error("Publish failed", firstErr, watermill.LogFields{
		"topic": call.topic, "failed": failed, "messages": len(call.msgs), "message_uuid": firstUUID,
	})
	if isNoPerm(firstErr) {
		// An ACL refuses a channel, or the command, as a whole: every
		// message of the call was refused, none reached a subscriber.
		call.err = fmt.Errorf("%w to channel %q (%d of %d messages): %w",
			ErrPublishRefused, call.channel, failed, len(call.msgs), firstErr)
		return
	}
	call.err = fmt.Errorf("redispubsub: publish to %q: %d of %d messages not sent: %w",
		call.topic, failed, len(call.msgs), firstErr)
}

// isNoPerm reports whether err is Redis's refusal by an ACL.
func isNoPerm(err error) bool {
	var redisErr redis.Error
	return errors.As(err, &redisErr) && strings.HasPrefix(redisErr.Error(), "NOPERM")
}

// batchContext returns the context of a pipeline: it ends when no caller
// waits for it any more, and has the latest deadline of its calls, if they
// all have one. (go-redis applies both to the socket only with
// ContextTimeoutEnabled; a stuck pipeline would otherwise hold up every
// later one for the client's ReadTimeout.)
func batchContext(calls []*publishCall) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, call := range calls {
		deadline, ok := call.ctx.Deadline()
		if !ok || call.ctx.Done() == nil {
			// This caller may wait for ever: so may the pipeline.
			return context.Background(), func() {}
		}
		if deadline.After(latest) {
			latest = deadline
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), latest)
	var waiting atomic.Int64
	waiting.Store(int64(len(calls)))
	stops := make([]func() bool, len(calls))
	for i, call := range calls {
		stops[i] = context.AfterFunc(call.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// messagesContext returns a context that is done as soon as the context of
// any of msgs is done.
func messagesContext(msgs []*message.Message) (context.Context, context.CancelFunc) {
	first := msgs[0].Context()
	if len(msgs) == 1 {
		return first, func() {}
	}
	ctx, cancel := context.WithCancelCause(first)
	stops := make([]func() bool, 0, len(msgs)-1)
	for _, msg := range msgs[1:] {
		mctx := msg.Context()
		if mctx == first || mctx.Done() == nil {
			continue
		}
		if mctx.Err() != nil {
			cancel(context.Cause(mctx)) // now, not in AfterFunc's goroutine
		}
		stops = append(stops, context.AfterFunc(mctx, func() { cancel(context.Cause(mctx)) }))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel(nil)
	}
}
