package redispubsub_test

import (
	"bytes"
	"encoding/hex"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// TestMsgpackMarshalGolden pins the version 1 layout byte for byte.
func TestMsgpackMarshalGolden(t *testing.T) {
	msg := message.NewMessage("u-1", message.Payload{0x00, 0xff, 'a'})
	msg.Metadata.Set("z", "1")
	msg.Metadata.Set("a", "")
	body, err := redispubsub.MsgpackMarshaler{}.Marshal("t:id", msg)
	require.NoError(t, err)
	// fixarray(4), 1, fixstr "u-1", fixmap(2) {"a":"", "z":"1"}, bin8(3) 00 ff 61
	assert.Equal(t, "94"+"01"+"a3752d31"+"82"+"a161"+"a0"+"a17a"+"a131"+"c40300ff61", hex.EncodeToString(body))

	body, err = redispubsub.MsgpackMarshaler{}.Marshal("t", message.NewMessage("", nil))
	require.NoError(t, err)
	// fixarray(4), 1, "", fixmap(0), nil
	assert.Equal(t, "9401a080c0", hex.EncodeToString(body))
}

func TestMsgpackRoundTrip(t *testing.T) {
	m := redispubsub.MsgpackMarshaler{}
	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	manyMetadata := map[string]string{}
	for i := range 40 { // a map16
		manyMetadata["k"+strconv.Itoa(i)] = strings.Repeat("v", i)
	}
	for _, c := range []struct {
		name     string
		uuid     string
		payload  []byte
		metadata map[string]string
	}{
		{"nil payload", "u", nil, nil},
		{"empty payload", "u", []byte{}, nil},
		{"all bytes", "u", allBytes, map[string]string{"k": "v"}},
		{"not JSON", "u", []byte("hello"), nil},
		{"bin16", "u", bytes.Repeat([]byte{0xc1}, 300), nil},
		{"bin32", "u", bytes.Repeat([]byte{0xde}, 70_000), nil},
		{"empty uuid", "", []byte("x"), nil},
		{"invalid UTF-8 strings", "\xff\xfe", []byte("x"), map[string]string{"\xc3": "\xe2\x80", "": ""}},
		{"long strings", strings.Repeat("u", 70_000), []byte("x"), map[string]string{strings.Repeat("k", 300): strings.Repeat("v", 70_000)}},
		{"many metadata entries", "u", []byte("x"), manyMetadata},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := message.NewMessage(c.uuid, c.payload)
			for k, v := range c.metadata {
				in.Metadata.Set(k, v)
			}
			body, err := m.Marshal("topic", in)
			require.NoError(t, err)
			out, err := m.Unmarshal("topic", body)
			require.NoError(t, err)
			assert.Equal(t, c.uuid, out.UUID)
			assert.Equal(t, c.payload == nil, out.Payload == nil, "nil-ness of the payload")
			assert.True(t, bytes.Equal(c.payload, out.Payload))
			require.NotNil(t, out.Metadata)
			assert.Equal(t, in.Metadata, out.Metadata)
		})
	}

	t.Run("nil metadata decodes as empty", func(t *testing.T) {
		in := message.NewMessage("u", nil)
		in.Metadata = nil
		body, err := m.Marshal("topic", in)
		require.NoError(t, err)
		out, err := m.Unmarshal("topic", body)
		require.NoError(t, err)
		require.NotNil(t, out.Metadata)
		assert.Empty(t, out.Metadata)
	})

	t.Run("does not retain body", func(t *testing.T) {
		in := message.NewMessage("uuid", message.Payload("payload"))
		in.Metadata.Set("key", "value")
		body, err := m.Marshal("topic", in)
		require.NoError(t, err)
		out, err := m.Unmarshal("topic", body)
		require.NoError(t, err)
		for i := range body {
			body[i] = 0
		}
		assert.Equal(t, "uuid", out.UUID)
		assert.Equal(t, "payload", string(out.Payload))
		assert.Equal(t, "value", out.Metadata.Get("key"))
	})
}

func TestMsgpackUnmarshalAcceptsStrAndNil(t *testing.T) {
	// [1, nil, {"k": "v" as bin}, "payload" as str]
	body := mustHex(t, "94"+"01"+"c0"+"81"+"a16b"+"c40176"+"a3"+hex.EncodeToString([]byte("abc")))
	msg, err := redispubsub.MsgpackMarshaler{}.Unmarshal("t", body)
	require.NoError(t, err)
	assert.Equal(t, "", msg.UUID)
	assert.Equal(t, message.Metadata{"k": "v"}, msg.Metadata)
	assert.Equal(t, "abc", string(msg.Payload))
}

func TestMsgpackUnmarshalMalformed(t *testing.T) {
	for _, c := range []struct{ name, hex, says string }{
		{"empty", "", "unexpected EOF"},
		{"not an array", "a3616263", "msgpack"},
		{"nil", "c0", "array of -1 elements"},
		{"three elements", "9301a080", "array of 3 elements, want 4"},
		{"five elements", "9501a080c0c0", "array of 5 elements, want 4"},
		{"version 2", "9402a080c0", "unsupported version 2"},
		{"version is a string", "94a131a080c0", "version"},
		{"uuid is a number", "940105 80c0", "uuid"},
		{"metadata is an array", "9401a090c0", "metadata"},
		{"metadata key is a number", "9401a0810101c0", "metadata key"},
		{"metadata value is a map", "9401a081a16b80c0", `metadata value for key "k"`},
		{"payload is a number", "9401a08001", "payload"},
		{"truncated payload", "9401a080c40561", "payload: length 5 exceeds the 1 bytes left"},
		{"truncated", "9401a0", "unexpected EOF"},
		{"trailing bytes", "9401a080c0c0c0", "2 trailing bytes"},
		{"JSON", hex.EncodeToString([]byte(`{"payload":1}`)), "msgpack"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg, err := redispubsub.MsgpackMarshaler{}.Unmarshal("t", mustHex(t, c.hex))
			require.ErrorIs(t, err, redispubsub.ErrMalformedMessage)
			assert.Nil(t, msg)
			assert.Contains(t, err.Error(), c.says)
		})
	}
}

// TestMsgpackForgedLengthsDoNotAllocate feeds bodies whose length prefixes
// claim up to 4 GiB. msgpack/v5 itself allocates whatever a bin length claims
// (Decoder.DecodeBytes on the 5 bytes c6 ff ff ff ff allocates 4 GiB), and up
// to 1 MiB for a str or skipped value; the marshaler must not.
func TestMsgpackForgedLengthsDoNotAllocate(t *testing.T) {
	for _, c := range []struct{ name, hex string }{
		{"bare 4 GiB bin", "c6ffffffff"},
		{"4 GiB bin payload", "9401a080c6ffffffff"},
		{"4 GiB str payload", "9401a080dbffffffff"},
		{"4 GiB str uuid", "9401dbffffffff"},
		{"4 GiB bin uuid", "9401c6ffffffff"},
		{"4 Gi entries metadata", "9401a0dfffffffff"},
		{"4 GiB metadata key", "9401a081dbffffffff"},
		{"4 GiB metadata value", "9401a081a16bc6ffffffff"},
		{"4 Gi elements array", "ddffffffff01a080c0"},
		{"1 MiB bin payload", "9401a080c6" + "00100000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := mustHex(t, c.hex)
			const runs = 100
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				_, err := redispubsub.MsgpackMarshaler{}.Unmarshal("t", body)
				require.ErrorIs(t, err, redispubsub.ErrMalformedMessage)
			}
			runtime.ReadMemStats(&after)
			perRun := (after.TotalAlloc - before.TotalAlloc) / runs
			assert.Less(t, perRun, uint64(4096), "bytes allocated per Unmarshal of a %d-byte body", len(body))
		})
	}
}

func TestMsgpackMarshalNilMessage(t *testing.T) {
	_, err := redispubsub.MsgpackMarshaler{}.Marshal("t", nil)
	require.Error(t, err)
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}

// FuzzMsgpackUnmarshal checks that Unmarshal never panics (nor allocates
// what a forged length claims: the fuzzer would run out of memory), that
// every error wraps ErrMalformedMessage, and that what it accepts survives
// Marshal and Unmarshal again exactly.
func FuzzMsgpackUnmarshal(f *testing.F) {
	m := redispubsub.MsgpackMarshaler{}
	seedMsg := message.NewMessage("8c0b6f4e-1d2a-4c5b-9e7f-0a1b2c3d4e5f", message.Payload(`{"a":1}`))
	seedMsg.Metadata.Set("k", "v")
	seedMsg.Metadata.Set("trace", "x")
	seed, err := m.Marshal("t", seedMsg)
	require.NoError(f, err)
	f.Add(seed)
	f.Add([]byte{0x94, 0x01, 0xa0, 0x80, 0xc0})
	f.Add([]byte{0x94, 0x01, 0xa0, 0x80, 0xc4, 0x00})
	f.Add([]byte{0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x94, 0x01, 0xc0, 0x81, 0xa1, 'k', 0xc4, 0x01, 'v', 0xa3, 'a', 'b', 'c'})
	f.Add([]byte{0x94, 0x01, 0xa0, 0x82, 0xa1, 'a', 0xa0, 0xa1, 'a', 0xa1, 'b', 0xc0}) // repeated key
	f.Add([]byte(`{"payload":1}`))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, body []byte) {
		msg, err := m.Unmarshal("t", body)
		if err != nil {
			require.ErrorIs(t, err, redispubsub.ErrMalformedMessage)
			require.Nil(t, msg)
			return
		}
		require.NotNil(t, msg.Metadata)

		again, err := m.Marshal("t", msg)
		require.NoError(t, err)
		msg2, err := m.Unmarshal("t", again)
		require.NoError(t, err)
		require.Equal(t, msg.UUID, msg2.UUID)
		require.Equal(t, msg.Payload == nil, msg2.Payload == nil)
		require.True(t, bytes.Equal(msg.Payload, msg2.Payload))
		require.Equal(t, msg.Metadata, msg2.Metadata)

		// The encoding is canonical: encoding the decoded message again
		// gives the same bytes.
		again2, err := m.Marshal("t", msg2)
		require.NoError(t, err)
		require.Equal(t, again, again2)

		// msgpack/v5 itself reads the re-encoded body the same way.
		var generic []any
		require.NoError(t, msgpack.Unmarshal(again, &generic))
		require.Len(t, generic, 4)
	})
}
