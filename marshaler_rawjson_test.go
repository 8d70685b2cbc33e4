package redispubsub_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

func TestRawJSONMarshal(t *testing.T) {
	m := redispubsub.RawJSONMarshaler{}
	for _, c := range []struct{ name, payload, body string }{
		{"object", `{"a":1}`, `{"a":1}`},
		{"kept as is", " [1, 2]\n", " [1, 2]\n"},
		{"empty", "", "null"},
		{"html", `"<a>&"`, `"<a>&"`},
		{"null", "null", "null"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := message.NewMessage("u", message.Payload(c.payload))
			msg.Metadata.Set("dropped", "yes")
			body, err := m.Marshal("topic:id", msg)
			require.NoError(t, err)
			assert.Equal(t, c.body, string(body))
		})
	}

	t.Run("does not alias the payload", func(t *testing.T) {
		msg := message.NewMessage("u", message.Payload(`{"a":1}`))
		body, err := m.Marshal("t", msg)
		require.NoError(t, err)
		body[0] = 'X'
		assert.Equal(t, `{"a":1}`, string(msg.Payload))
	})

	t.Run("nil message", func(t *testing.T) {
		_, err := m.Marshal("t", nil)
		require.Error(t, err)
	})
}

func TestRawJSONMarshalRefusesNonJSONPayload(t *testing.T) {
	for name, payload := range map[string]string{
		"binary":        "\x00\x01",
		"text":          "hello",
		"two values":    "1 2",
		"invalid utf-8": "\"\xff\"",
		"whitespace":    " ",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := redispubsub.RawJSONMarshaler{}.Marshal("t", message.NewMessage("the-uuid", message.Payload(payload)))
			require.ErrorIs(t, err, redispubsub.ErrPayloadNotJSON)
			assert.Contains(t, err.Error(), "the-uuid")
			assert.Contains(t, err.Error(), "MsgpackMarshaler")
		})
	}
}

func TestRawJSONUnmarshal(t *testing.T) {
	m := redispubsub.RawJSONMarshaler{}
	for _, c := range []struct{ name, body, payload string }{
		{"empty body", "", "null"},
		{"object", `{"a":1}`, `{"a":1}`},
		{"envelope-looking body is payload", `{"type":"a","payload":1,"uuid":"u","metadata":{"k":"v"}}`,
			`{"type":"a","payload":1,"uuid":"u","metadata":{"k":"v"}}`},
		{"scalar", `42`, `42`},
		{"whitespace kept", " \"s\"\n", " \"s\"\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg, err := m.Unmarshal("t", []byte(c.body))
			require.NoError(t, err)
			assert.Equal(t, c.payload, string(msg.Payload))
			assert.Len(t, msg.UUID, 36, "fresh watermill UUID")
			assert.NotNil(t, msg.Metadata)
			assert.Empty(t, msg.Metadata)
		})
	}

	t.Run("does not retain body", func(t *testing.T) {
		body := []byte(`[1]`)
		msg, err := m.Unmarshal("t", body)
		require.NoError(t, err)
		body[1] = '2'
		assert.Equal(t, `[1]`, string(msg.Payload))
	})
}

func TestRawJSONUnmarshalMalformed(t *testing.T) {
	for _, c := range []struct{ name, body, says string }{
		{"text", "hello", "not valid JSON"},
		{"two values", "1 2", "not valid JSON"},
		{"whitespace only", " ", "not valid JSON"},
		{"truncated", `{"a":`, "not valid JSON"},
		{"invalid utf-8", "\"\xff\"", "UTF-8"},
		{"binary", "\x93\x01\x02", "UTF-8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg, err := redispubsub.RawJSONMarshaler{}.Unmarshal("t", []byte(c.body))
			require.ErrorIs(t, err, redispubsub.ErrMalformedMessage)
			assert.Nil(t, msg)
			assert.Contains(t, err.Error(), c.says)
		})
	}
}

func TestRawJSONRoundTrip(t *testing.T) {
	m := redispubsub.RawJSONMarshaler{}
	for _, payload := range []string{`{"a":[1,2,{"b":"c"}]}`, `"é😀\u2028"`, ` 1 `, `null`} {
		body, err := m.Marshal("t", message.NewMessage("u", message.Payload(payload)))
		require.NoError(t, err)
		msg, err := m.Unmarshal("t", body)
		require.NoError(t, err)
		assert.Equal(t, payload, string(msg.Payload))
	}
}

// TestJSONValidationAgreesWithEncodingJSON checks on edge cases that the
// marshalers accept exactly the JSON texts that json.Valid accepts (the fuzz
// targets check it on random input), including its nesting limit of 10000.
func TestJSONValidationAgreesWithEncodingJSON(t *testing.T) {
	cases := []string{
		"0", "-0", "-", "01", "-01", "1.", ".5", "1.5", "1e", "1e+", "1E5", "-0.0e-0", "2.e3", "1e5.5", "+1", "0x10",
		"1 ", " 1", "1 2", "Infinity", "NaN",
		"true", "tru", "truex", "false", "null", "nul", "nulll", "True",
		`""`, `"`, `"a`, `"\"`, `"\\"`, `"\/"`, `"\x"`, `"\u12"`, `"\u12G4"`, `"\uABCD"`, `"\uabcd"`, `"\u00e9"`,
		"\"\t\"", "\"\x1f\"", "\"\x7f\"", "\"\x00\"",
		"[]", "[", "]", "[1,]", "[,1]", "[1 2]", "[[]]", "[[]", "[1,[2,[3]]]",
		"{}", "{", "{,}", `{"a" 1}`, `{"a":1,}`, `{1:2}`, `{"a":}`, `{"a":1 "b":2}`, `{"a":1,"b":{"c":[]}}`, `{"a"}`,
		"", " ", "\t\n\r ", "\f1", "\v1", "1\u00a0",
		" { \"a b\" : \" c \\\" d\\\\ \" ,\r\n\t\"e\":[ 1 ,2 , {} ] } \n", `[ "\\" ]`, `[ "\"" , " " ]`,
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
		strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001),
		strings.Repeat("[", 10000) + strings.Repeat("]", 9999),
	}
	for _, c := range cases {
		body := []byte(c)
		_, err := redispubsub.RawJSONMarshaler{}.Unmarshal("t", body)
		want := len(body) == 0 || json.Valid(body)
		assert.Equal(t, want, err == nil, "body %.40q: %v", c, err)

		_, err = redispubsub.RawJSONMarshaler{}.Marshal("t", message.NewMessage("u", body))
		assert.Equal(t, want, err == nil, "payload %.40q: %v", c, err)

		// The envelope embeds a valid payload (compacted) as long as the
		// envelope around it stays within the limit, and carries anything
		// else as base64.
		envelope, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal("t", message.NewMessage("", body))
		require.NoError(t, err)
		value, isBase64 := wantEnvelopePayload(body)
		assert.Equal(t, !want || strings.Count(c, "[")+strings.Count(c, "{") >= 10000, isBase64, "payload %.40q", c)
		if isBase64 {
			value += `,"payload_encoding":"base64"`
		}
		assert.Equal(t, `{"type":"t","payload":`+value+`}`, string(envelope), "payload %.40q", c)
	}
}

// FuzzRawJSONUnmarshal checks that Unmarshal never panics, accepts exactly
// the empty body and valid UTF-8 JSON, and that what it accepts survives
// Marshal and Unmarshal again unchanged.
func FuzzRawJSONUnmarshal(f *testing.F) {
	for _, seed := range []string{
		"", "null", `{"a":1}`, `[1,"x",{"y":null}]`, ` "s" `, `1e400`, `-0`, "\"\\ud800\"",
		"hello", "1 2", "\"\xff\"", "{", `{"type":"a","id":"b","payload":{"x":1}}`,
	} {
		f.Add([]byte(seed))
	}
	m := redispubsub.RawJSONMarshaler{}
	f.Fuzz(func(t *testing.T, body []byte) {
		msg, err := m.Unmarshal("t", body)
		wantOK := len(body) == 0 || isUTF8JSON(body)
		if err != nil {
			require.ErrorIs(t, err, redispubsub.ErrMalformedMessage)
			require.False(t, wantOK, "refused valid body %q: %v", body, err)
			return
		}
		require.True(t, wantOK, "accepted invalid body %q", body)
		if len(body) == 0 {
			require.Equal(t, "null", string(msg.Payload))
		} else {
			require.Equal(t, body, []byte(msg.Payload))
		}

		again, err := m.Marshal("t", msg)
		require.NoError(t, err)
		require.Equal(t, []byte(msg.Payload), again)
		msg2, err := m.Unmarshal("t", again)
		require.NoError(t, err)
		require.Equal(t, msg.Payload, msg2.Payload)
		require.Empty(t, msg2.Metadata)
	})
}
