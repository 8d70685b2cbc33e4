package redispubsub

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func readFrames(t *testing.T, input string, maxBody int) ([]frame, error) {
	t.Helper()
	rr := newRESPReader(strings.NewReader(input), maxBody)
	var frames []frame
	for {
		var f frame
		err := rr.readFrame(&f)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return frames, err
		}
		// The byte slices are the reader's until the next read.
		f.name, f.channel, f.text = bytes.Clone(f.name), bytes.Clone(f.channel), bytes.Clone(f.text)
		frames = append(frames, f)
	}
}

func TestRESPReader_Frames(t *testing.T) {
	for _, p := range []resp{2, 3} {
		input := p.confirm("subscribe", "a", 1) + p.confirm("ssubscribe", "s", 1) + p.confirm("psubscribe", "p*", 2) +
			p.confirm("unsubscribe", "a", 0) + p.confirm("sunsubscribe", "s", 0) + p.confirm("punsubscribe", "p*", 0) +
			p.message("a", "body") + p.aggregate(3) + bulk("smessage") + bulk("s") + bulk("") +
			p.pmessage("p*", "pq", "x") + p.pong() + "-ERR no\r\n" + "!5\r\nERR x\r\n" +
			p.aggregate(3) + bulk("unsubscribe") + "$-1\r\n" + ":0\r\n"
		frames, err := readFrames(t, input, 1<<20)
		require.NoError(t, err)
		want := []frame{
			{kind: frameSubscribe, name: []byte("a"), text: []byte("subscribe")},
			{kind: frameSubscribe, sharded: true, name: []byte("s"), text: []byte("ssubscribe")},
			{kind: frameSubscribe, pattern: true, name: []byte("p*"), text: []byte("psubscribe")},
			{kind: frameUnsubscribe, name: []byte("a"), text: []byte("unsubscribe")},
			{kind: frameUnsubscribe, sharded: true, name: []byte("s"), text: []byte("sunsubscribe")},
			{kind: frameUnsubscribe, pattern: true, name: []byte("p*"), text: []byte("punsubscribe")},
			{kind: frameMessage, name: []byte("a"), body: "body", size: 4, text: []byte("message")},
			{kind: frameMessage, sharded: true, name: []byte("s"), text: []byte("smessage")},
			{kind: framePMessage, pattern: true, name: []byte("p*"), channel: []byte("pq"), body: "x", size: 1, text: []byte("pmessage")},
			{kind: framePong},
			{kind: frameError, text: []byte("ERR no")},
			{kind: frameError, text: []byte("ERR x")},
			{kind: frameUnsubscribe, text: []byte("unsubscribe")},
		}
		if p == 2 {
			want[9].text = []byte("pong")
		}
		require.Equal(t, want, frames, "RESP%d", p)
	}
}

func TestRESPReader_RefusesMalformedInput(t *testing.T) {
	for name, input := range map[string]string{
		"no CRLF":              "+PONG\n",
		"bad length":           "*3\r\n$x\r\n",
		"negative length":      "$-5\r\nabc\r\n",
		"length beyond Redis":  "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$9999999999\r\n",
		"bulk not ended":       "*3\r\n$7\r\nmessage\r\n$1\r\naXY",
		"unknown type":         "?what\r\n",
		"nested too deep":      strings.Repeat("*1\r\n", maxNesting+2) + ":1\r\n",
		"huge aggregate":       "*99999999\r\n",
		"null channel":         "*3\r\n$7\r\nmessage\r\n$-1\r\n$1\r\nx\r\n",
		"body of another type": "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n:1\r\n",
		"line too long":        "+" + strings.Repeat("x", 64<<10) + "\r\n",
	} {
		_, err := readFrames(t, input, 1<<20)
		require.ErrorIs(t, err, errProtocol, name)
	}
}

// A length the peer announces is never allocated before it is checked: a
// body beyond the limit is skipped as it arrives.
func TestRESPReader_DoesNotAllocateAnnouncedLengths(t *testing.T) {
	input := "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$400000000\r\n" + strings.Repeat("x", 1<<20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := readFrames(t, input, 1024)
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "bytes allocated")
}

func TestAppendCommand(t *testing.T) {
	require.Equal(t, "*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$0\r\n\r\n", string(appendCommand(nil, "SUBSCRIBE", []string{"a", ""})))
	require.Equal(t, "*1\r\n$4\r\nPING\r\n", string(appendCommand(nil, "PING", nil)))
}

// FuzzRESPReader feeds the reader arbitrary bytes: it must never panic,
// never hand out a body longer than its limit, and every message it reads
// must be well formed.
func FuzzRESPReader(f *testing.F) {
	for _, p := range []resp{2, 3} {
		f.Add([]byte(p.confirm("subscribe", "a", 1) + p.message("a", envelope("a", 1)) + p.pong()))
		f.Add([]byte(p.pmessage("p*", "pq", "x") + "-ERR x\r\n" + p.confirm("sunsubscribe", "s", 0)))
		f.Add([]byte(p.message("a", strings.Repeat("y", 100))))
	}
	f.Add([]byte(">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nkey\r\n|1\r\n+ttl\r\n:3\r\n%1\r\n+a\r\n~1\r\n#t\r\n"))
	f.Add([]byte("=7\r\ntxt:abc\r\n,1.5\r\n(123\r\n_\r\n!3\r\nERR\r\n"))
	const maxBody = 64
	f.Fuzz(func(t *testing.T, input []byte) {
		rr := newRESPReader(bytes.NewReader(input), maxBody)
		for range 1000 {
			var f frame
			if err := rr.readFrame(&f); err != nil {
				return
			}
			switch f.kind {
			case frameMessage, framePMessage:
				if len(f.body) > maxBody || (f.oversized && f.body != "") || (!f.oversized && len(f.body) != f.size) {
					t.Fatalf("message of %d bytes (size %d, oversized %v)", len(f.body), f.size, f.oversized)
				}
				if f.kind == framePMessage && f.channel == nil {
					t.Fatal("pmessage without a channel")
				}
			}
		}
	})
}

// FuzzRESPMessageRoundTrip: whatever the channel and the body, a message
// written in RESP2 or RESP3 reads back the same.
func FuzzRESPMessageRoundTrip(f *testing.F) {
	f.Add("a", "body", false)
	f.Add("", "", true)
	f.Add("ch\r\n", "\r\n$3\r\n", true)
	f.Fuzz(func(t *testing.T, channel, body string, push bool) {
		p := resp(2)
		if push {
			p = 3
		}
		frames, err := readFrames(t, p.message(channel, body)+p.pong(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(frames) != 2 || frames[0].kind != frameMessage || string(frames[0].name) != channel || frames[0].body != body || frames[1].kind != framePong {
			t.Fatalf("read %+v", frames)
		}
	})
}
