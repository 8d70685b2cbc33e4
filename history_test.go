package redispubsub

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/hashslot"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// splice writes offset where the history script writes it in body, an
// envelope that carries epoch.
func splice(t testing.TB, body []byte, epoch, offset string) string {
	t.Helper()
	o, ok := offsetMark(body, epochMark(epoch))
	require.True(t, ok, "no offset mark in %s", body)
	return string(body[:o]) + offset + string(body[o:])
}

// A message with a history on the wire, pinned by the golden file that
// Node wrote (testdata/envelope/gen.js): the envelope reserves the
// position's values, the script's splice fills them, and the result is the
// envelope with rps_epoch and rps_offset sorted in with the message's
// metadata (no sequence stamp: the offset numbers the message). The stamp
// reader finds the position; decoding keeps it in the metadata.
func TestHistoryGolden(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "envelope", "history.json"))
	require.NoError(t, err)
	msg := message.NewMessage("u-11", []byte(`{"ok":true}`))
	msg.Metadata.Set("k", "v")
	msg.Metadata.Set("z", "last")
	msg.Metadata.Set(MetadataOffset, "9") // relayed from another channel: replaced
	body, err := marshal(JSONEnvelopeMarshaler{}, "call.responded:uuid-123", msg, &stamp{history: true, epoch: "3f2kq9x1"})
	require.NoError(t, err)
	assert.Contains(t, string(body), `"rps_epoch":"3f2kq9x1","rps_offset":""`)
	published := splice(t, body, "3f2kq9x1", "42")
	require.Equal(t, string(golden), published)

	got, ok := JSONEnvelopeMarshaler{}.stampOf(published)
	require.True(t, ok)
	assert.Equal(t, Position{Offset: 42, Epoch: "3f2kq9x1"}, got.position)
	assert.False(t, got.sequenced())

	decoded, err := unmarshal(JSONEnvelopeMarshaler{}, "call.responded:uuid-123", published)
	require.NoError(t, err)
	assert.Equal(t, message.Metadata{"k": "v", "z": "last", MetadataEpoch: "3f2kq9x1", MetadataOffset: "42"}, decoded.Metadata)
	pos, ok := PositionOf(decoded)
	require.True(t, ok)
	assert.Equal(t, "42-3f2kq9x1", pos.String())
}

// A stamp with both a sequence number and a position (not what a Publisher
// sends today) is read whole; a message's own rps_seq is kept when there
// is no sequence stamp.
func TestHistoryStampReading(t *testing.T) {
	st := stamp{publisher: "p", seq: 7, since: 1, channel: channelChecksum("t"), scoped: true, history: true, epoch: "e"}
	body, err := marshal(JSONEnvelopeMarshaler{}, "t", message.NewMessage("u", []byte(`{}`)), &st)
	require.NoError(t, err)
	got, ok := JSONEnvelopeMarshaler{}.stampOf(splice(t, body, "e", "5"))
	require.True(t, ok)
	assert.Equal(t, uint64(7), got.seq)
	assert.Equal(t, Position{Offset: 5, Epoch: "e"}, got.position)

	msg := message.NewMessage("u", []byte(`{}`))
	msg.Metadata.Set(MetadataSequence, "user's") // not a stamp: kept
	body, err = marshal(JSONEnvelopeMarshaler{}, "t", msg, &stamp{history: true, epoch: "e1"})
	require.NoError(t, err)
	published := splice(t, body, "e1", "3")
	assert.Equal(t, `{"type":"t","payload":{},"uuid":"u","metadata":{"rps_epoch":"e1","rps_offset":"3","rps_seq":"user's"}}`, published)
	got, ok = JSONEnvelopeMarshaler{}.stampOf(published)
	require.True(t, ok)
	assert.False(t, got.sequenced())
	assert.Equal(t, Position{Offset: 3, Epoch: "e1"}, got.position)
}

// The offset's place found is the metadata's, whatever the payload and the
// other metadata values hold.
func TestHistoryPlaceholdersAreTheMetadatas(t *testing.T) {
	msg := message.NewMessage("u", []byte(`{"rps_epoch":"","rps_offset":"","x":{"metadata":{"rps_offset":""}}}`))
	msg.Metadata.Set("zz", `"rps_offset":""`)
	msg.Metadata.Set("a", `"rps_epoch":""`)
	body, err := marshal(JSONEnvelopeMarshaler{}, "t", msg, &stamp{history: true, epoch: "ep"})
	require.NoError(t, err)
	published := splice(t, body, "ep", "77")
	decoded, err := unmarshal(JSONEnvelopeMarshaler{}, "t", published)
	require.NoError(t, err)
	assert.Equal(t, string(msg.Payload), string(decoded.Payload))
	assert.Equal(t, message.Metadata{"zz": `"rps_offset":""`, "a": `"rps_epoch":""`, MetadataEpoch: "ep", MetadataOffset: "77"},
		decoded.Metadata)
	_, ok := offsetMark([]byte(`{"type":"t","payload":{"rps_epoch":"ep","rps_offset":""},"metadata":{"k":"v"}}`), epochMark("ep"))
	assert.True(t, ok, "a payload's are found when the metadata has none: the Publisher never sends such a body")
}

// The history's keys hash to the channel's slot: a channel with a hash tag
// keeps it first, any other is put in braces; a channel with a "}" outside
// a tag cannot have a history.
func TestHistoryKeysShareTheChannelSlot(t *testing.T) {
	for _, channel := range []string{
		"chat", "app:events:call.responded:uuid-123", "{user1}.chat", "app:{t}:x", "x{y}z{w}",
		"a{b", "{", "{{a}}", "emoji:ü{ß}", "a{b{c}d",
	} {
		stream, meta, err := historyKeys(channel)
		require.NoError(t, err, channel)
		assert.Equal(t, hashslot.Of(channel), hashslot.Of(stream), "%q: %q", channel, stream)
		assert.Equal(t, hashslot.Of(channel), hashslot.Of(meta), "%q: %q", channel, meta)
		assert.NotEqual(t, stream, meta)
	}
	stream, meta, err := historyKeys("myapp:events:chat")
	require.NoError(t, err)
	assert.Equal(t, "rps:hlist:{myapp:events:chat}", stream)
	assert.Equal(t, "rps:hmeta:{myapp:events:chat}", meta)
	stream, _, err = historyKeys("room:{42}:messages")
	require.NoError(t, err)
	assert.Equal(t, "rps:hlist:room:{42}:messages", stream)

	for _, channel := range []string{"a}b", "}", "{}x}", "a{}b}", "a{}b{c}", "{}", ""} {
		_, _, err := historyKeys(channel)
		require.ErrorIs(t, err, errNoHistorySlot, channel)
	}
}

func TestHistoryConfig(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	valid := PublisherConfig{Client: client, History: History{Size: 10}}
	require.NoError(t, valid.Validate())
	valid.setDefaults()
	assert.Equal(t, DefaultHistoryTTL, valid.History.TTL)

	for name, c := range map[string]PublisherConfig{
		"negative size": {Client: client, History: History{Size: -1}},
		"short TTL":     {Client: client, History: History{Size: 1, TTL: time.Microsecond}},
		"msgpack":       {Client: client, History: History{Size: 1}, Marshaler: MsgpackMarshaler{}},
		"raw JSON":      {Client: client, History: History{Size: 1}, Marshaler: RawJSONMarshaler{}},
	} {
		err := c.Validate()
		require.ErrorIs(t, err, ErrInvalidConfig, name)
		t.Log(err)
	}
	require.NoError(t, PublisherConfig{Client: client, History: History{TTL: -1}}.Validate(), "no history: TTL unused")
}

// A pipeline that go-redis sends again after Redis ran it (its connection
// broke before the reply) runs the script again with the same Publisher id
// and numbers: the messages are appended and published once, the second
// run answers nothing. Later numbers of the same Publisher go on, several
// messages to a run, each with its offset. The bodies carry an epoch that
// the history does not have (it is new): the script writes its own in
// each, and answers it.
func TestHistoryScriptRunsAMessageOnce(t *testing.T) {
	p, client := historyPublisher(t)
	ctx := testutil.Context(t)
	require.NoError(t, historyScript.Load(ctx, client).Err())
	list, meta, err := historyKeys("once")
	require.NoError(t, err)
	msg := message.NewMessage("u", []byte(`{}`))
	epoch := newEpoch()
	body, err := marshal(JSONEnvelopeMarshaler{}, "once", msg, &stamp{history: true, epoch: epoch})
	require.NoError(t, err)
	offset, ok := offsetMark(body, epochMark(epoch))
	require.True(t, ok)
	record := appendRecord(nil, msg, payloadJSON)
	call := &publishCall{channel: "once", historyKeys: [2]string{list, meta}, publisher: "pub-1"}
	pubsub := client.Subscribe(ctx, "once")
	t.Cleanup(func() { _ = pubsub.Close() })
	_, err = pubsub.Receive(ctx)
	require.NoError(t, err)
	run := func(seqs ...uint64) []int64 {
		call.bodies, call.marks, call.records = nil, nil, nil
		var run []historyMessage
		for i, seq := range seqs {
			call.bodies, call.records = append(call.bodies, body), append(call.records, record)
			call.marks = append(call.marks, historyMarks{offset: offset, seq: seq})
			run = append(run, historyMessage{call, i})
		}
		cmd := p.historyCommand(ctx, epoch, run)
		require.NoError(t, client.Process(ctx, cmd))
		answered, receivers, err := historyReply(cmd, len(seqs))
		require.NoError(t, err)
		require.Equal(t, client.HGet(ctx, meta, "e").Val(), answered)
		return receivers
	}
	assert.Equal(t, []int64{1}, run(1))
	assert.Empty(t, run(1), "run already")
	assert.Equal(t, int64(1), client.LLen(ctx, list).Val())
	assert.Equal(t, []int64{1, 1}, run(2, 3))
	assert.Empty(t, run(2, 3))
	assert.Empty(t, run(1))
	assert.Equal(t, int64(3), client.LLen(ctx, list).Val())
	assert.Equal(t, "3", client.HGet(ctx, meta, "s").Val())
	h, err := readHistory(ctx, client, "once", 1, client.HGet(ctx, meta, "e").Val())
	require.NoError(t, err)
	require.Len(t, h.entries, 2)
	assert.Equal(t, []uint64{2, 3}, []uint64{h.entries[0].offset, h.entries[1].offset})
	assert.Equal(t, string(record), h.entries[1].record)
	for offset := range uint64(3) {
		got, err := pubsub.ReceiveMessage(ctx)
		require.NoError(t, err)
		assert.Equal(t, splice(t, []byte(strings.Replace(string(body), epoch, h.epoch, 1)), h.epoch, strconv.FormatUint(offset+1, 10)), got.Payload)
	}
}

// Records published between readHistory's first look at the last offset
// and its transaction push the wanted ones further back than it asked for:
// it asks again, for more, and returns every record after the offset,
// each numbered right.
func TestReadHistoryAsksAgainWhenPublishedMeanwhile(t *testing.T) {
	srv := redistest.Start(t)
	p, err := NewPublisher(PublisherConfig{Client: srv.NewClient(t), History: History{Size: 1000}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	publish := func(first, n int) {
		msgs := make([]*message.Message, n)
		for i := range msgs {
			msgs[i] = message.NewMessage(strconv.Itoa(first+i), []byte(`{}`))
		}
		require.NoError(t, p.Publish("more", msgs...))
	}
	publish(1, 10)
	reader := srv.NewClient(t)
	hook := &beforeTransactions{run: func() { publish(11, 100) }}
	reader.AddHook(hook)

	h, err := readHistory(context.Background(), reader, "more", 5, srv.NewClient(t).HGet(context.Background(), "rps:hmeta:{more}", "e").Val())
	require.NoError(t, err)
	assert.Equal(t, 2, hook.transactions, "asked again")
	assert.Equal(t, uint64(110), h.top)
	require.Len(t, h.entries, 105)
	for i, e := range h.entries {
		msg, err := decodeRecord(e.record, Position{Offset: e.offset, Epoch: h.epoch})
		require.NoError(t, err)
		require.Equal(t, uint64(6+i), e.offset)
		require.Equal(t, strconv.Itoa(6+i), msg.UUID, "the record of offset %d", e.offset)
	}
}

// beforeTransactions is a go-redis hook that calls run before the first
// transaction it sees, and counts them.
type beforeTransactions struct {
	run          func()
	transactions int
}

func (h *beforeTransactions) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *beforeTransactions) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *beforeTransactions) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.transactions++; h.transactions == 1 {
			h.run()
		}
		return next(ctx, cmds)
	}
}

// A run that Redis answered NOSCRIPT is sent again once the script is
// loaded, unless a later run of its channel and Publisher ran (another
// client loaded the script between them): that one fails, saying so,
// rather than being taken for run already by the script.
func TestHistoryNoScriptRetry(t *testing.T) {
	p, client := historyPublisher(t)
	ctx := context.Background()
	require.NoError(t, client.ScriptFlush(ctx).Err())
	runOf := func(channel string, seq uint64) []historyMessage {
		msg := message.NewMessage("u", []byte(`{}`))
		epoch := newEpoch()
		body, err := marshal(JSONEnvelopeMarshaler{}, channel, msg, &stamp{history: true, epoch: epoch})
		require.NoError(t, err)
		offset, ok := offsetMark(body, epochMark(epoch))
		require.True(t, ok)
		list, meta, err := historyKeys(channel)
		require.NoError(t, err)
		call := &publishCall{channel: channel, historyKeys: [2]string{list, meta}, publisher: "pub-1", epoch: epoch,
			bodies: [][]byte{body}, marks: []historyMarks{{offset: offset, seq: seq}}, records: [][]byte{appendRecord(nil, msg, payloadJSON)}}
		return []historyMessage{{call, 0}}
	}
	runs := [][]historyMessage{runOf("overtaken", 1), runOf("overtaken", 2), runOf("other", 1)}
	cmds := make([]*redis.SliceCmd, len(runs))
	for i, run := range runs {
		cmds[i] = p.historyCommand(ctx, run[0].call.epoch, run)
	}
	cmds[0].SetErr(noScriptError{})
	cmds[1].SetVal([]any{"epoch", int64(0)}) // ran, after the script was loaded by another client
	cmds[2].SetErr(noScriptError{})

	p.retryNoScript(ctx, cmds, runs)
	require.Error(t, cmds[0].Err())
	assert.Contains(t, cmds[0].Err().Error(), "a later run of the channel in the pipeline ran")
	require.NoError(t, cmds[2].Err(), "sent again")
	_, receivers, err := historyReply(cmds[2], 1)
	require.NoError(t, err)
	assert.Equal(t, []int64{0}, receivers)
	assert.Equal(t, int64(1), client.LLen(ctx, runs[2][0].call.historyKeys[0]).Val())
	assert.Zero(t, client.LLen(ctx, runs[0][0].call.historyKeys[0]).Val(), "the overtaken run is not sent")
}

// noScriptError is Redis's answer to an EVALSHA of a script it does not have.
type noScriptError struct{}

func (noScriptError) Error() string { return "NOSCRIPT No matching script. Please use EVAL." }

func (noScriptError) RedisError() {}

// historyPublisher returns a Publisher keeping a history of 10 on a Redis
// of its own, and a client of that Redis.
func historyPublisher(t *testing.T) (*Publisher, *redis.Client) {
	srv := redistest.Start(t)
	client := srv.NewClient(t)
	p, err := NewPublisher(PublisherConfig{Client: client, History: History{Size: 10}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p, client
}

// With a history, a node has historyLanes queues: a call made while a
// pipeline is on the wire goes out on the other lane at once instead of
// waiting for it, under the lane's own id for the script's once-only
// numbers; once both are idle, calls take the first lane again.
func TestHistoryLanes(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.NewClient(t)
	client := srv.NewClient(t)
	gate := &scriptGate{held: make(chan struct{}), open: make(chan struct{})}
	client.AddHook(gate)
	pub, err := NewPublisher(PublisherConfig{Client: client, History: History{Size: 10}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	release := sync.OnceFunc(func() { close(gate.open) })
	t.Cleanup(release) // before Close, when the test failed half way
	ctx := testutil.Context(t)
	sub := admin.Subscribe(ctx, "lanes")
	t.Cleanup(func() { _ = sub.Close() })
	_, err = sub.Receive(ctx) // the confirmation
	require.NoError(t, err)
	offsetOf := func() string {
		msg, err := sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		got, err := JSONEnvelopeMarshaler{}.Unmarshal(msg.Channel, []byte(msg.Payload))
		require.NoError(t, err)
		return got.UUID + "@" + got.Metadata.Get(MetadataOffset)
	}

	first := make(chan error, 1)
	go func() { first <- pub.Publish("lanes", message.NewMessage("a", []byte(`1`))) }()
	testutil.Wait(t, gate.held, "the first call's script run") // a's, on the wire of the first lane
	b := message.NewMessage("b", []byte(`2`))
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b.SetContext(bctx)
	require.NoError(t, pub.Publish("lanes", b), "b, on the second lane, while a waits")
	assert.Equal(t, "b@1", offsetOf())
	release()
	require.NoError(t, <-first)
	assert.Equal(t, "a@2", offsetOf())
	require.NoError(t, pub.Publish("lanes", message.NewMessage("c", []byte(`3`))))
	assert.Equal(t, "c@3", offsetOf())

	_, meta, err := historyKeys("lanes")
	require.NoError(t, err)
	numbers, err := admin.HGetAll(ctx, meta).Result()
	require.NoError(t, err)
	assert.Equal(t, "2", numbers["p:"+pub.id], "a and c, on the first lane")
	assert.Equal(t, "1", numbers["p:"+pub.id+".1"], "b, on the second")
}

// scriptGate is a go-redis hook that holds the first history script run
// (an EVALSHA sent alone) until open is closed, saying so on held.
type scriptGate struct {
	held, open chan struct{}
	first      atomic.Bool
}

func (g *scriptGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *scriptGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "evalsha" && g.first.CompareAndSwap(false, true) {
			close(g.held)
			<-g.open
		}
		return next(ctx, cmd)
	}
}

func (g *scriptGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A call encoded with an epoch its lane's neighbours no longer carry (the
// Publisher heard another between its encoding and their numbering) runs
// in its place in the lane's numbers: not merged into an earlier run of its
// epoch, which the script would then take for run already, answering
// nothing and publishing nothing while its caller got nil.
func TestHistoryRunsKeepTheLaneNumbersOrder(t *testing.T) {
	p, client := historyPublisher(t)
	ctx := context.Background()
	require.NoError(t, p.Publish("sw", message.NewMessage("first", []byte(`0`))))
	// What a Publisher that has heard nothing yet guesses.
	p.mu.Lock()
	s := p.sequences["sw"]
	heard := s.epoch
	s.epoch = ""
	p.sequences["sw"] = s
	p.mu.Unlock()

	call := func(id string) *publishCall {
		return &publishCall{ctx: ctx, topic: "sw", channel: "sw", msgs: []*message.Message{message.NewMessage(id, []byte(`1`))}, done: make(chan struct{})}
	}
	a := call("a")
	require.NoError(t, p.encodeWithHistory(a)) // the guess
	p.heardEpochs(map[string]string{"sw": heard})
	b, c := call("b"), call("c")
	require.NoError(t, p.encodeWithHistory(b))
	require.NoError(t, p.encodeWithHistory(c))
	require.NotEqual(t, a.epoch, b.epoch)
	p.mu.Lock()
	for _, call := range []*publishCall{b, a, c} { // the lane's order
		p.number(call, 0)
	}
	p.mu.Unlock()
	p.sendWithHistory(ctx, []*publishCall{b, a, c})
	for _, call := range []*publishCall{b, a, c} {
		require.NoError(t, call.err, call.msgs[0].UUID)
	}
	list, _, err := historyKeys("sw")
	require.NoError(t, err)
	records, err := client.LRange(ctx, list, 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, records, 4, "first, b, a and c")
	assert.EqualValues(t, 4, p.Stats().Published)
}
