package redispubsub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// History configures the history a Publisher keeps of each channel it
// publishes on (PublisherConfig.History), from which a Subscriber with
// SubscriberConfig.Recover fills what it missed and SubscribeFrom starts.
// The zero value keeps none.
type History struct {
	// Size is how many of its latest messages a channel's history holds.
	// Zero: no history (the default).
	Size int
	// TTL is how long a channel's history lives after its last
	// publication; each publication starts it again. Default:
	// DefaultHistoryTTL (5 minutes).
	TTL time.Duration
}

// DefaultHistoryTTL is History.TTL's default.
const DefaultHistoryTTL = 5 * time.Minute

// enabled reports whether h keeps a history.
func (h History) enabled() bool { return h.Size > 0 }

func (h *History) setDefaults() {
	if h.enabled() && h.TTL == 0 {
		h.TTL = DefaultHistoryTTL
	}
}

// validate reports what is wrong with h, as PublisherConfig.Validate does.
func (h History) validate(m Marshaler) error {
	switch {
	case h.Size < 0:
		return fmt.Errorf("%w: PublisherConfig.History.Size must not be negative, got %d", ErrInvalidConfig, h.Size)
	case !h.enabled():
		return nil
	case h.TTL < time.Millisecond:
		return fmt.Errorf("%w: PublisherConfig.History.TTL must be at least 1ms, got %v", ErrInvalidConfig, h.TTL)
	}
	if _, ok := m.(JSONEnvelopeMarshaler); !ok {
		return fmt.Errorf("%w: PublisherConfig.History needs the JSONEnvelopeMarshaler, whose metadata carries the offset (got %T)",
			ErrInvalidConfig, m)
	}
	return nil
}

// The keys of a channel's history. Both live in the channel's hash slot, so
// that one script may touch them and publish on the channel on Redis
// Cluster (and SPUBLISH in sharded mode), and a slot migration moves them
// with the channel:
//
//	rps:hlist:<tagged channel>  a list: the records of the latest messages (history_record.go), the last the newest
//	rps:hmeta:<tagged channel>  a hash: "s" = the last offset given, "e" = the epoch
//
// The list holds the offsets up to "s", one per record: the last record is
// offset s, the one before it s-1, and so on. (Before records, a history
// was a stream of envelopes under rps:hist: and rps:meta:; the new names
// keep a Publisher or Subscriber of that version and one of this version,
// running side by side on one Redis, out of each other's keys.) The tagged channel is the
// channel itself when it has a hash tag (a non-empty "{...}"), else the
// channel in braces: "rps:hlist:{myapp:events:chat}".
const (
	historyKeyPrefix = "rps:hlist:"
	metaKeyPrefix    = "rps:hmeta:"
)

// errNoHistorySlot is wrapped by historyKeys' error.
var errNoHistorySlot = errors.New("redispubsub: no key can share the channel's hash slot")

// historyKeys returns the keys of channel's history. A channel with a "}"
// outside a hash tag (e.g. "a}b", "{}x}"), or an empty one, cannot have
// one: no key can be given its slot.
func historyKeys(channel string) (list, meta string, err error) {
	tagged := channel
	if channel == "" {
		return "", "", fmt.Errorf("%w: the channel is empty", errNoHistorySlot)
	}
	if !hasHashTag(channel) {
		if strings.IndexByte(channel, '}') >= 0 {
			return "", "", fmt.Errorf("%w: %q has a '}' outside a hash tag; give it a hash tag ({...}) to keep a history",
				errNoHistorySlot, channel)
		}
		tagged = "{" + channel + "}"
	}
	return historyKeyPrefix + tagged, metaKeyPrefix + tagged, nil
}

// hasHashTag reports whether Redis Cluster hashes name by a hash tag: the
// part between its first "{" and the next "}", when not empty.
func hasHashTag(name string) bool {
	i := strings.IndexByte(name, '{')
	if i < 0 {
		return false
	}
	j := strings.IndexByte(name[i+1:], '}')
	return j > 0
}

// historyScript appends messages of one channel to its history and
// publishes them, in one atomic step: one run per channel and pipeline
// (up to maxScriptMessages), so that what Redis spends per message is an
// RPUSH's share and a PUBLISH.
//
//	KEYS[1] the list, KEYS[2] the meta hash
//	ARGV[1] channel, ARGV[2] history size, ARGV[3] TTL in milliseconds,
//	ARGV[4] the epoch to use if the history is new (never used before),
//	ARGV[5] the epoch the bodies carry, ARGV[6] "publish" or "spublish",
//	ARGV[7] "p:" and the Publisher's id, ARGV[8] and ARGV[9] the
//	Publisher's numbers of the first and the last message on the channel;
//	then the n records; then two per message: its body before the offset
//	(it ends with the epoch and `","rps_offset":"`) and after it
//
// The bodies carry the epoch that the Publisher last heard of, so that a
// body is joined from two pieces and its offset by one concatenation (Lua
// spends per string it makes about what PUBLISH costs); only when the
// history's epoch is another (new, or lost and started again) does the
// script cut the body's epoch out.
//
// It returns the history's epoch, then what PUBLISH returned for each
// message, the number of receivers, or nothing more for messages it ran
// already: go-redis sends a pipeline again when its connection broke, also
// after Redis ran it, and the meta hash keeps the last number of each lane
// of a Publisher (a field of about 40 bytes per lane that published while
// the history lived; see nodeQueue). A history whose meta hash is gone (expired, evicted, flushed)
// starts again with a new epoch, its list deleted: offsets begin at 1
// again.
var historyScript = redis.NewScript(historyScriptSource)

const historyScriptSource = `
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
	epoch = ARGV[4]
	redis.call('del', KEYS[1])
	redis.call('hset', KEYS[2], 'e', epoch)
else
	local last = redis.call('hget', KEYS[2], ARGV[7])
	if last and tonumber(last) >= tonumber(ARGV[8]) then
		return {epoch}
	end
end
redis.call('hset', KEYS[2], ARGV[7], ARGV[9])
local n = (#ARGV - 9) / 3
local first = redis.call('hincrby', KEYS[2], 's', n) - n
local size = tonumber(ARGV[2])
if redis.call('rpush', KEYS[1], unpack(ARGV, 10, 9 + n)) > size then
	redis.call('ltrim', KEYS[1], -size, -1)
end
redis.call('pexpire', KEYS[1], ARGV[3])
redis.call('pexpire', KEYS[2], ARGV[3])
local reply = {epoch}
local other = epoch ~= ARGV[5]
local tail = #'","rps_offset":"'
for i = 1, n do
	local a = 8 + n + 2 * i
	local before = ARGV[a]
	if other then
		before = string.sub(before, 1, #before - #ARGV[5] - tail) .. epoch .. string.sub(before, #before - tail + 1)
	end
	reply[i + 1] = redis.call(ARGV[6], ARGV[1], before .. string.format('%d', first + i) .. ARGV[a + 1])
end
return reply
`

// maxScriptMessages bounds the messages of one run of historyScript, so
// that a run holds Redis up for a fraction of a millisecond (a few µs per
// message) and its arguments stay far below Lua's stack limit.
const maxScriptMessages = 128

// historyMarks are where the script writes a body's offset (the number of
// bytes before it), and the Publisher's number of the message on its
// channel, with which the script runs a message once.
type historyMarks struct {
	offset int
	seq    uint64
}

// epochMark returns what precedes the offset in a body whose history stamp
// carries epoch (see stamp.history): `"rps_epoch":"<epoch>","rps_offset":"`.
func epochMark(epoch string) []byte {
	return []byte(`"` + MetadataEpoch + `":"` + epoch + `","` + MetadataOffset + `":"`)
}

// offsetMark returns where the script writes the offset in body, an
// envelope with a history stamp: right after mark, its epochMark. The
// metadata is the envelope's last member and its keys are unique, so the
// last occurrence is the metadata's own: a payload or a metadata value
// cannot hide a later one (a quote inside a JSON string is escaped).
func offsetMark(body, mark []byte) (int, bool) {
	i := bytes.LastIndex(body, mark)
	if i < 0 || body[i+len(mark)] != '"' {
		return 0, false
	}
	return i + len(mark), true
}

// runKey names the runs of historyScript whose numbers follow each other:
// those of one channel and one lane (its Publisher id).
type runKey struct{ channel, publisher string }

// historyMessage is one message of a historyCommand: which message of
// which call it is.
type historyMessage struct {
	call  *publishCall
	index int
}

// historyCommand returns the EVALSHA of historyScript that appends msgs,
// all of one channel and carrying epoch, to its history and publishes them.
// Its first key is KEYS[1], so a ClusterClient sends it to the node of the
// channel's slot.
func (p *Publisher) historyCommand(ctx context.Context, epoch string, msgs []historyMessage) *redis.SliceCmd {
	publish := "publish"
	if p.config.Sharded {
		publish = "spublish"
	}
	h := p.config.History
	first, last := msgs[0], msgs[len(msgs)-1]
	args := make([]any, 0, 14+3*len(msgs))
	args = append(args, "evalsha", historyScript.Hash(), 2, first.call.historyKeys[0], first.call.historyKeys[1],
		first.call.channel, h.Size, h.TTL.Milliseconds(), newEpoch(), epoch, publish, "p:"+first.call.publisher,
		first.call.marks[first.index].seq, last.call.marks[last.index].seq)
	for _, m := range msgs {
		args = append(args, m.call.records[m.index])
	}
	for _, m := range msgs {
		body, offset := m.call.bodies[m.index], m.call.marks[m.index].offset
		args = append(args, body[:offset], body[offset:])
	}
	cmd := redis.NewSliceCmd(ctx, args...)
	cmd.SetFirstKeyPos(3)
	return cmd
}

// newEpoch returns an epoch for a history that the script finds new: 64
// random bits in base 36 (no "-", which separates a Position's parts),
// always 13 characters, so that a channel's bodies do not change size with
// their history.
func newEpoch() string {
	const width = 13 // base 36 of the largest uint64
	e := strconv.FormatUint(rand.Uint64(), 36)
	return strings.Repeat("0", width-len(e)) + e
}

// isNoScript reports whether err says that Redis does not have the script
// (restarted, failed over, SCRIPT FLUSH).
func isNoScript(err error) bool {
	var redisErr redis.Error
	return errors.As(err, &redisErr) && strings.HasPrefix(redisErr.Error(), "NOSCRIPT")
}

// retryNoScript sends again, in order, the runs of cmds that Redis
// answered with NOSCRIPT (it restarted, failed over, or its scripts were
// flushed: it ran none of them), once the script is loaded. It replaces
// them in cmds; the replacements carry the new answers, or the load's
// error. A run that a later run of its channel and Publisher (runs[i][0]'s)
// overtook (another client loaded the script in between) is not sent
// again but fails: it would come after that one, whose numbers would make
// the script take it for run already.
func (p *Publisher) retryNoScript(ctx context.Context, cmds []*redis.SliceCmd, runs [][]historyMessage) {
	if !slices.ContainsFunc(cmds, func(cmd *redis.SliceCmd) bool { return isNoScript(cmd.Err()) }) {
		return
	}
	ranLater := make(map[runKey]bool)
	overtaken := make([]bool, len(cmds))
	for i := len(cmds) - 1; i >= 0; i-- {
		key := runKey{runs[i][0].call.channel, runs[i][0].call.publisher}
		switch err := cmds[i].Err(); {
		case err == nil:
			ranLater[key] = true
		case isNoScript(err):
			overtaken[i] = ranLater[key]
		}
	}
	var again []*redis.SliceCmd
	for i, cmd := range cmds {
		switch {
		case overtaken[i]:
			cmd.SetErr(fmt.Errorf("redispubsub: not sent: Redis did not have the history script, and a later run of the channel in the pipeline ran: %w", cmd.Err()))
		case isNoScript(cmd.Err()):
			fresh := redis.NewSliceCmd(ctx, cmd.Args()...)
			fresh.SetFirstKeyPos(3)
			cmds[i] = fresh
			again = append(again, fresh)
		}
	}
	if len(again) == 0 {
		return
	}
	if err := historyScript.Load(ctx, p.config.Client).Err(); err != nil {
		for _, cmd := range again {
			cmd.SetErr(fmt.Errorf("redispubsub: load the history script: %w", err))
		}
		return
	}
	p.logger.Debug("History script loaded", nil)
	_, _ = p.config.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, cmd := range again {
			_ = pipe.Process(ctx, cmd)
		}
		return nil
	})
}
