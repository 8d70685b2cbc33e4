package redispubsub_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// envelopeGoldenCase builds, as a Watermill message, the event that
// testdata/envelope/gen.js builds as a JavaScript object under the same name.
// The golden file testdata/envelope/<name>.json holds JSON.stringify's output.
type envelopeGoldenCase struct {
	name     string
	topic    string
	payload  string // nil payload when empty
	uuid     string
	metadata map[string]string
	// compactPayload is the payload as it appears in the body, when it
	// differs from payload.
	compactPayload string
}

var envelopeGoldenCases = []envelopeGoldenCase{
	{
		name: "with_id", topic: "call.responded:uuid-123",
		payload:  `{"result":{"ok":true,"n":42}}`,
		uuid:     "8c0b6f4e-1d2a-4c5b-9e7f-0a1b2c3d4e5f",
		metadata: map[string]string{"k": "v"},
	},
	{name: "without_id", topic: "user.created", payload: `{"name":"Ada"}`, uuid: "u-1"},
	{name: "empty_payload", topic: "ping:1", uuid: "u-2", compactPayload: "null"},
	{
		name: "metadata_sorted", topic: "order.placed:42",
		payload: `[1,2.5,"x",null,false]`, uuid: "u-3",
		metadata: map[string]string{"z": "last", "a": "first", "m": ""},
	},
	{
		name: "unicode", topic: "événement:日本:語",
		payload: `{"msg":"héllo 🌍","ls":"a` + "\u2028" + `b"}`, uuid: "u-4",
		metadata: map[string]string{"emoji": "😀", "sep": "x\u2029y"},
	},
	{
		name: "html_chars", topic: "a<b:x&y>z",
		payload: `{"h":"<b>&amp;</b>"}`, uuid: "u-5",
		metadata: map[string]string{"html": "<script>alert('&')</script>", "a<b": "c>d"},
	},
	{
		name: "control_chars", topic: "ctl",
		payload: `{"s":"\u0000\b\t\n\f\r\u001f\"\\/"}`, uuid: "u-6",
		metadata: map[string]string{"ctl": "\x00\x01\b\t\n\x0b\f\r\x1f\"\\/\x7f"},
	},
	{name: "ts_peer", topic: "call.responded:abc", payload: `{"x":1}`},
	{
		name: "whitespace_payload", topic: "w:x y",
		payload: "{ \"a\" : [ 1, 2 ] ,\n \"b\":\"x y\" }\n", uuid: "u-7",
		compactPayload: `{"a":[1,2],"b":"x y"}`,
	},
	{name: "bare", topic: "tick", compactPayload: "null"},
	{name: "base64_text", topic: "text.sent:1", payload: "x", uuid: "u-8"},
	{
		name: "base64_binary", topic: "file.uploaded",
		payload: "\x00\x01\x02\xfb\xff\xbf\x80", uuid: "u-9",
		metadata: map[string]string{"k": "v"},
	},
	{name: "base64_invalid_utf8", topic: "a:b", payload: "\"\xff\"", uuid: "u-10"},
	{name: "base64_whitespace", topic: "w", payload: " \n"},
	// The stamp as a Publisher writes it (TestStampGolden): here as
	// metadata a message carries.
	{
		name: "stamped", topic: "call.responded:uuid-123", payload: `{"ok":true}`, uuid: "u-11",
		metadata: map[string]string{
			"k": "v", "rps_ch": "6746a7b8", "rps_pub": "dP6DdXXZR6ya6JcxqLn54V", "rps_seq": "7", "rps_since": "1796055553462",
		},
	},
}

func (c envelopeGoldenCase) message() *message.Message {
	var payload message.Payload
	if c.payload != "" {
		payload = message.Payload(c.payload)
	}
	msg := message.NewMessage(c.uuid, payload)
	for k, v := range c.metadata {
		msg.Metadata.Set(k, v)
	}
	return msg
}

func readEnvelopeGolden(t *testing.T, name string) []byte {
	t.Helper()
	golden, err := os.ReadFile(filepath.Join("testdata", "envelope", name+".json"))
	require.NoError(t, err)
	return golden
}

// TestJSONEnvelopeMarshalGolden pins the exact bytes of the envelope: each
// golden file was written by JavaScript's JSON.stringify (testdata/envelope/gen.js).
func TestJSONEnvelopeMarshalGolden(t *testing.T) {
	for _, c := range envelopeGoldenCases {
		t.Run(c.name, func(t *testing.T) {
			golden := readEnvelopeGolden(t, c.name)
			body, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal(c.topic, c.message())
			require.NoError(t, err)
			assert.Equal(t, string(golden), string(body))
		})
	}
}

// TestJSONEnvelopeUnmarshalGolden decodes the golden bodies back.
func TestJSONEnvelopeUnmarshalGolden(t *testing.T) {
	for _, c := range envelopeGoldenCases {
		t.Run(c.name, func(t *testing.T) {
			msg, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal(c.topic, readEnvelopeGolden(t, c.name))
			require.NoError(t, err)
			want := c.payload
			if c.compactPayload != "" {
				want = c.compactPayload
			}
			assert.Equal(t, want, string(msg.Payload))
			if c.uuid != "" {
				assert.Equal(t, c.uuid, msg.UUID)
			} else {
				assert.NotEmpty(t, msg.UUID, "a body without uuid gets a fresh one")
			}
			assert.Equal(t, len(c.metadata), len(msg.Metadata))
			for k, v := range c.metadata {
				assert.Equal(t, v, msg.Metadata.Get(k), "metadata %q", k)
			}
		})
	}
}

// TestJSONEnvelopeGoldenFilesMatchNode regenerates the golden files with Node
// into a temporary directory and compares them with the committed ones, so
// that gen.js and the golden files cannot drift apart. Skipped without node.
func TestJSONEnvelopeGoldenFilesMatchNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	dir := t.TempDir()
	gen, err := os.ReadFile(filepath.Join("testdata", "envelope", "gen.js"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "gen.js"), gen, 0o600))
	cmd := exec.Command(node, "gen.js")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, c := range envelopeGoldenCases {
		fromNode, err := os.ReadFile(filepath.Join(dir, c.name+".json"))
		require.NoError(t, err, "gen.js has no case %q", c.name)
		assert.Equal(t, string(readEnvelopeGolden(t, c.name)), string(fromNode), c.name)
	}
}

func TestJSONEnvelopeDoesNotEscapeHTML(t *testing.T) {
	msg := message.NewMessage("u", message.Payload(`{"h":"a<b"}`))
	msg.Metadata.Set("a<b", "a<b>&")
	body, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal("a<b:c&d", msg)
	require.NoError(t, err)
	assert.Equal(t, `{"type":"a<b","id":"c&d","payload":{"h":"a<b"},"uuid":"u","metadata":{"a<b":"a<b>&"}}`, string(body))
	assert.NotContains(t, string(body), `\u00`)
	assert.NotContains(t, string(body), `\u2028`)
}

func TestJSONEnvelopeOmitsEmptyID(t *testing.T) {
	body, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal("a", message.NewMessage("", message.Payload(`1`)))
	require.NoError(t, err)
	assert.Equal(t, `{"type":"a","payload":1}`, string(body))

	// A trailing ':' also means an empty id.
	body, err = redispubsub.JSONEnvelopeMarshaler{}.Marshal("a:", message.NewMessage("", message.Payload(`1`)))
	require.NoError(t, err)
	assert.Equal(t, `{"type":"a","payload":1}`, string(body))
}

func TestJSONEnvelopeMarshalInvalidUTF8InStrings(t *testing.T) {
	msg := message.NewMessage("u\xff", message.Payload(`1`))
	msg.Metadata.Set("k\xc3", "\xe2\x80v")
	body, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal("t\xffx:\xff", msg)
	require.NoError(t, err)
	assert.Equal(t, "{\"type\":\"t\uFFFDx\",\"id\":\"\uFFFD\",\"payload\":1,\"uuid\":\"u\uFFFD\",\"metadata\":{\"k\uFFFD\":\"\uFFFD\uFFFDv\"}}", string(body))
}

// A payload that is not JSON travels as a base64 string followed by
// "payload_encoding":"base64", and comes back byte for byte.
func TestJSONEnvelopeCarriesNonJSONPayloadAsBase64(t *testing.T) {
	m := redispubsub.JSONEnvelopeMarshaler{}
	for name, payload := range map[string]string{
		"binary":         "\x00\x01\x02",
		"text":           "hello",
		"two values":     "1 2",
		"truncated":      `{"a":`,
		"invalid utf-8":  "\"\xff\"",
		"whitespace":     "  ",
		"trailing comma": `[1,]`,
		"all bytes":      allBytes(),
	} {
		t.Run(name, func(t *testing.T) {
			msg := message.NewMessage("the-uuid", message.Payload(payload))
			msg.Metadata.Set("k", "v")
			body, err := m.Marshal("t:id", msg)
			require.NoError(t, err)
			assert.Equal(t, `{"type":"t","id":"id","payload":"`+base64.StdEncoding.EncodeToString([]byte(payload))+
				`","payload_encoding":"base64","uuid":"the-uuid","metadata":{"k":"v"}}`, string(body))
			assert.True(t, isUTF8JSON(body), "a TypeScript listener can parse it")

			out, err := m.Unmarshal("t:id", body)
			require.NoError(t, err)
			assert.Equal(t, []byte(payload), []byte(out.Payload))
			assert.Equal(t, "the-uuid", out.UUID)
			assert.Equal(t, msg.Metadata, out.Metadata)
		})
	}
}

func allBytes() string {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return string(b)
}

func TestJSONEnvelopeMarshalNilMessage(t *testing.T) {
	_, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal("t", nil)
	require.Error(t, err)
}

func TestJSONEnvelopeMarshalDoesNotModifyMessage(t *testing.T) {
	msg := message.NewMessage("u", message.Payload(" [1, 2] "))
	msg.Metadata.Set("k", "v")
	_, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal("t", msg)
	require.NoError(t, err)
	assert.Equal(t, " [1, 2] ", string(msg.Payload))
	assert.Equal(t, message.Metadata{"k": "v"}, msg.Metadata)
}

// TestJSONEnvelopeUnmarshalTypeScriptShapes decodes what TypeScript peers
// and other loose producers send.
func TestJSONEnvelopeUnmarshalTypeScriptShapes(t *testing.T) {
	for _, c := range []struct {
		name, body, payload string
		uuid                string // "" = a fresh one is expected
		metadata            map[string]string
	}{
		{name: "empty body", body: "", payload: "null"},
		{name: "null body", body: "null", payload: "null"},
		{name: "null body with spaces", body: " null\n", payload: "null"},
		{name: "detail type id payload", body: `{"type":"call.responded","id":"uuid-123","payload":{"ok":true}}`, payload: `{"ok":true}`},
		{name: "type only", body: `{"type":"a"}`, payload: "null"},
		{name: "empty object", body: `{}`, payload: "null"},
		{name: "payload null", body: `{"payload":null}`, payload: "null"},
		{name: "payload scalar", body: `{"payload":"str"}`, payload: `"str"`},
		{name: "payload number", body: `{"payload":-1.5e3}`, payload: `-1.5e3`},
		{name: "payload last member number", body: `{"payload":12}`, payload: `12`},
		{name: "uuid and metadata", body: `{"type":"a","payload":[],"uuid":"u-1","metadata":{"k":"v","e":""}}`,
			payload: `[]`, uuid: "u-1", metadata: map[string]string{"k": "v", "e": ""}},
		{name: "unknown fields ignored", body: `{"extra":{"payload":"no","uuid":5,"metadata":1},"payload":1,"more":[{"}":"]"}],"x":null}`, payload: `1`},
		{name: "type and id of any kind ignored", body: `{"type":5,"id":{"x":[]},"payload":true}`, payload: `true`},
		{name: "whitespace everywhere", body: " {\n\t\"payload\" :  { \"a\" : 1 } ,\r\n \"uuid\" : \"u\" , \"metadata\" : { \"k\" : \"v\" } } \n",
			payload: `{ "a" : 1 }`, uuid: "u", metadata: map[string]string{"k": "v"}},
		{name: "uuid null", body: `{"uuid":null}`, payload: "null"},
		{name: "uuid empty", body: `{"uuid":""}`, payload: "null"},
		{name: "metadata null", body: `{"metadata":null}`, payload: "null"},
		{name: "metadata empty", body: `{"metadata":{}}`, payload: "null"},
		{name: "escaped member names", body: `{"p\u0061yload":2,"\u0075uid":"u","metadat\u0061":{"\u006b":"\u0076\n"}}`,
			payload: `2`, uuid: "u", metadata: map[string]string{"k": "v\n"}},
		{name: "escaped strings", body: `{"uuid":"a\"b\\c\/d\u00e9\ud83d\ude00","metadata":{"k":"\ud800"}}`,
			payload: "null", uuid: "a\"b\\c/dé😀", metadata: map[string]string{"k": "\uFFFD"}},
		{name: "case-sensitive member names", body: `{"Payload":1,"UUID":"x","Metadata":{"a":1}}`, payload: "null"},
		{name: "repeated members: last wins", body: `{"payload":1,"uuid":5,"metadata":{"a":1},"payload":2,"uuid":"u","metadata":{"b":"c"}}`,
			payload: `2`, uuid: "u", metadata: map[string]string{"b": "c"}},
		{name: "repeated metadata key: last wins", body: `{"metadata":{"a":"1","a":"2"}}`, payload: "null", metadata: map[string]string{"a": "2"}},
		{name: "payload with strings holding braces", body: `{"payload":{"s":"}{][\"\\"},"uuid":"u"}`, payload: `{"s":"}{][\"\\"}`, uuid: "u"},
		{name: "base64 payload", body: `{"type":"a","payload":"AAEC+/+/gA==","payload_encoding":"base64"}`, payload: "\x00\x01\x02\xfb\xff\xbf\x80"},
		{name: "base64 marker before payload", body: `{"payload_encoding":"base64","payload":"eA==","uuid":"u"}`, payload: "x", uuid: "u"},
		{name: "base64 empty", body: `{"payload":"","payload_encoding":"base64"}`, payload: ""},
		{name: "base64 with escapes", body: `{"payload":"eA\u003d\u003d","payload_enc\u006fding":"b\u0061se64"}`, payload: "x"},
		{name: "base64 of JSON", body: `{"payload":"eyJhIjoxfQ==","payload_encoding":"base64"}`, payload: `{"a":1}`},
		{name: "payload_encoding null", body: `{"payload":"eA==","payload_encoding":null}`, payload: `"eA=="`},
		{name: "payload_encoding repeated: last wins", body: `{"payload":"eA==","payload_encoding":"x","payload_encoding":"base64"}`, payload: "x"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal("whatever:topic", []byte(c.body))
			require.NoError(t, err)
			assert.Equal(t, c.payload, string(msg.Payload))
			if c.uuid != "" {
				assert.Equal(t, c.uuid, msg.UUID)
			} else {
				assert.Len(t, msg.UUID, 36, "fresh watermill UUID")
			}
			require.NotNil(t, msg.Metadata)
			if c.metadata == nil {
				c.metadata = map[string]string{}
			}
			assert.Equal(t, message.Metadata(c.metadata), msg.Metadata)
		})
	}
}

func TestJSONEnvelopeUnmarshalFreshUUIDs(t *testing.T) {
	a, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal("t", nil)
	require.NoError(t, err)
	b, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal("t", []byte(`{}`))
	require.NoError(t, err)
	assert.NotEqual(t, a.UUID, b.UUID)
}

func TestJSONEnvelopeUnmarshalDoesNotRetainBody(t *testing.T) {
	body := []byte(`{"payload":{"a":1},"uuid":"u","metadata":{"k":"v"}}`)
	msg, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal("t", body)
	require.NoError(t, err)
	for i := range body {
		body[i] = 'X'
	}
	assert.Equal(t, `{"a":1}`, string(msg.Payload))
	assert.Equal(t, "u", msg.UUID)
	assert.Equal(t, "v", msg.Metadata.Get("k"))

	// The null payload is not shared between messages either.
	m1, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal("t", nil)
	require.NoError(t, err)
	m1.Payload[0] = 'X'
	m2, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal("t", nil)
	require.NoError(t, err)
	assert.Equal(t, "null", string(m2.Payload))
}

func TestJSONEnvelopeUnmarshalMalformed(t *testing.T) {
	for _, c := range []struct{ name, body, says string }{
		{"not JSON", `hello`, "not valid JSON"},
		{"truncated", `{"payload":1`, "not valid JSON"},
		{"two values", `{} {}`, "not valid JSON"},
		{"whitespace only", "  ", "not valid JSON"},
		{"trailing comma", `{"payload":1,}`, "not valid JSON"},
		{"invalid UTF-8", "{\"uuid\":\"\xff\"}", "UTF-8"},
		{"array body", `[1,2]`, "body is a JSON array, want an object"},
		{"string body", `"x"`, "body is a JSON string"},
		{"number body", `42`, "body is a JSON number"},
		{"boolean body", `true`, "body is a JSON boolean"},
		{"uuid number", `{"uuid":5}`, "uuid is a JSON number, want a string"},
		{"uuid object", `{"uuid":{}}`, "uuid is a JSON object"},
		{"metadata number value", `{"metadata":{"a":1}}`, `metadata value for key "a" is a JSON number, want a string`},
		{"metadata null value", `{"metadata":{"a":null}}`, `metadata value for key "a" is a JSON null`},
		{"metadata object value", `{"metadata":{"ok":"v","a":{}}}`, `metadata value for key "a" is a JSON object`},
		{"metadata overridden bad value", `{"metadata":{"a":1,"a":"x"}}`, `metadata value for key "a" is a JSON number`},
		{"metadata array", `{"metadata":[]}`, "metadata is a JSON array, want an object"},
		{"metadata string", `{"metadata":"k=v"}`, "metadata is a JSON string"},
		{"unknown payload_encoding", `{"payload":"eA==","payload_encoding":"hex"}`, `payload_encoding is "hex", want "base64" or null`},
		{"payload_encoding number", `{"payload":"eA==","payload_encoding":64}`, `payload_encoding is 64`},
		{"base64 payload missing", `{"payload_encoding":"base64"}`, "payload_encoding is base64 but payload is missing"},
		{"base64 payload null", `{"payload":null,"payload_encoding":"base64"}`, "payload is a JSON null, want a string"},
		{"base64 payload object", `{"payload":{},"payload_encoding":"base64"}`, "payload is a JSON object, want a string"},
		{"base64 invalid", `{"payload":"e!==","payload_encoding":"base64"}`, "payload is not valid base64"},
		{"base64 unpadded", `{"payload":"eA","payload_encoding":"base64"}`, "payload is not valid base64"},
		{"base64 url alphabet", `{"payload":"-_8=","payload_encoding":"base64"}`, "payload is not valid base64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal("t", []byte(c.body))
			require.ErrorIs(t, err, redispubsub.ErrMalformedMessage)
			assert.Nil(t, msg)
			assert.Contains(t, err.Error(), c.says)
		})
	}
}

func TestJSONEnvelopeRoundTrip(t *testing.T) {
	m := redispubsub.JSONEnvelopeMarshaler{}
	for _, c := range []struct {
		name, topic, payload string
		metadata             map[string]string
	}{
		{"object", "a:b", `{"a":[1,{"b":null}],"c":"d"}`, map[string]string{"k": "v", "x": "y"}},
		{"string", "a", `"str"`, nil},
		{"id with colons", "a:b:c:d", `1`, map[string]string{"": "empty key", "quote\"": "\\"}},
		{"unicode", "é:ü", `{"emoji":"😀"}`, map[string]string{"ü": "\u2028\x00"}},
		{"escapes kept", "t", `"\u00e9\n"`, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := message.NewMessage("uuid-"+c.name, message.Payload(c.payload))
			for k, v := range c.metadata {
				in.Metadata.Set(k, v)
			}
			body, err := m.Marshal(c.topic, in)
			require.NoError(t, err)
			require.True(t, json.Valid(body), "%s", body)

			out, err := m.Unmarshal(c.topic, body)
			require.NoError(t, err)
			assert.Equal(t, in.UUID, out.UUID)
			assert.Equal(t, c.payload, string(out.Payload))
			assert.Equal(t, in.Metadata, out.Metadata)

			// What encoding/json reads from the body agrees.
			var decoded struct {
				Type     string            `json:"type"`
				ID       *string           `json:"id"`
				Payload  json.RawMessage   `json:"payload"`
				UUID     string            `json:"uuid"`
				Metadata map[string]string `json:"metadata"`
			}
			require.NoError(t, json.Unmarshal(body, &decoded))
			eventType, id := redispubsub.SplitTopic(c.topic)
			assert.Equal(t, eventType, decoded.Type)
			if id == "" {
				assert.Nil(t, decoded.ID, `no "id" member without an id`)
			} else {
				require.NotNil(t, decoded.ID)
				assert.Equal(t, id, *decoded.ID)
			}
			assert.Equal(t, c.payload, string(decoded.Payload))
			assert.Equal(t, in.UUID, decoded.UUID)
			if len(c.metadata) > 0 {
				assert.Equal(t, c.metadata, decoded.Metadata)
			}
		})
	}
}

// TestJSONEnvelopeEscapingMatchesNode compares the escaping of every ASCII
// character and a few others with JSON.stringify. Skipped without node.
func TestJSONEnvelopeEscapingMatchesNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	var sb strings.Builder
	for c := rune(0); c < 0x80; c++ {
		sb.WriteRune(c)
	}
	sb.WriteString("é€😀\u2028\u2029\uFEFF\uFFFD")
	s := sb.String()

	msg := message.NewMessage(s, message.Payload(`0`))
	msg.Metadata.Set(s, s)
	body, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal("t:"+s, msg)
	require.NoError(t, err)

	// Hand the string to node in an ASCII-only, JSON-escaped form that its
	// JSON.parse reads back to the same string.
	arg, err := json.Marshal(s)
	require.NoError(t, err)
	script := `const s = JSON.parse(process.argv[1]);` +
		`process.stdout.write(JSON.stringify({type: "t", id: s, payload: 0, uuid: s, metadata: {[s]: s}}));`
	out, err := exec.Command(node, "-e", script, string(arg)).Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		t.Fatalf("node: %v: %s", err, ee.Stderr)
	}
	require.NoError(t, err)
	assert.True(t, bytes.Equal(out, body), "node:\n%q\ngo:\n%q", out, body)
}

// FuzzJSONEnvelopeUnmarshal checks that Unmarshal never panics, agrees with
// the slow encoding/json oracle (referenceDecodeEnvelope) on what it accepts
// and what it finds, and that what it accepts survives Marshal and Unmarshal
// again: same UUID and metadata, the payload compacted, the body valid JSON
// with type and id from the topic, and a second Marshal byte for byte equal.
func FuzzJSONEnvelopeUnmarshal(f *testing.F) {
	for _, c := range envelopeGoldenCases {
		golden, err := os.ReadFile(filepath.Join("testdata", "envelope", c.name+".json"))
		require.NoError(f, err)
		f.Add(c.topic, golden)
	}
	for _, body := range []string{
		"", "null", "{}", `{"payload":{ "a" : [1, 2] }}`, `{"uuid":5}`, `{"metadata":{"a":1}}`,
		`{"metadata":{"a":1,"a":"x"}}`, `{"payload":1,"payload":2}`, `[1,2]`, `not json`,
		`{"p\u0061yload":"\ud800","uuid":"\u00e9"}`, "{\"uuid\":\"\xff\"}", `{"payload":"}"}`,
	} {
		f.Add("t:id", []byte(body))
	}
	f.Add("t\xff:\x00<&>\u2028", []byte(`{"payload":[]}`))

	m := redispubsub.JSONEnvelopeMarshaler{}
	f.Fuzz(func(t *testing.T, topic string, body []byte) {
		msg, err := m.Unmarshal(topic, body)
		ref, refOK := referenceDecodeEnvelope(body)
		if err != nil {
			require.ErrorIs(t, err, redispubsub.ErrMalformedMessage)
			require.Nil(t, msg)
			require.False(t, refOK, "refused a body the oracle accepts: %v", err)
			return
		}
		require.True(t, refOK, "accepted a body the oracle refuses")
		require.Equal(t, string(ref.payload), string(msg.Payload))
		if ref.uuid != "" {
			require.Equal(t, ref.uuid, msg.UUID)
		}
		require.NotEmpty(t, msg.UUID)
		require.Equal(t, message.Metadata(ref.metadata), msg.Metadata)

		checkEnvelopeRoundTrip(t, topic, msg)
	})
}

// FuzzJSONEnvelopeRoundTrip checks that Marshal takes every payload, that
// the body is valid UTF-8 JSON a TypeScript peer can parse, and that
// Unmarshal gives the payload back: compacted when it is JSON, byte for byte
// otherwise. (Payloads at the nesting limit, too large to fuzz quickly, are
// TestMarshalersDecodeWhatTheyEncode's.)
func FuzzJSONEnvelopeRoundTrip(f *testing.F) {
	for _, c := range envelopeGoldenCases {
		f.Add(c.topic, []byte(c.payload))
	}
	for _, payload := range []string{
		"x", "\x00", "\xff", `"\ud800"`, " 1 ", "1 2", `{"a":`, "\"\xff\"", "[[[1]]]",
	} {
		f.Add("t:id", []byte(payload))
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		msg := message.NewMessage("u-1", payload)
		msg.Metadata.Set("k", "v")
		checkEnvelopeRoundTrip(t, topic, msg)
	})
}

// checkEnvelopeRoundTrip marshals msg (whose UUID and metadata are valid
// UTF-8, and the UUID not empty) and checks the body as encoding/json reads
// it: the members in the documented order, the topic (with invalid UTF-8
// replaced byte by byte), the payload as wantEnvelopePayload says, the UUID
// and the metadata. Then that Unmarshal gives the message back (the payload
// compacted when it is JSON, byte for byte otherwise) and that marshaling
// that again gives the same body.
func checkEnvelopeRoundTrip(t *testing.T, topic string, msg *message.Message) {
	t.Helper()
	m := redispubsub.JSONEnvelopeMarshaler{}
	out, err := m.Marshal(topic, msg)
	require.NoError(t, err)
	require.True(t, isUTF8JSON(out), "%q", out)
	wantValue, isBase64 := wantEnvelopePayload(msg.Payload)

	eventType, id := redispubsub.SplitTopic(topic)
	keys, values := envelopeMembers(t, out)
	wantKeys := []string{"type", "id", "payload", "payload_encoding", "uuid", "metadata"}
	if id == "" {
		wantKeys = slicesDelete(wantKeys, "id")
	}
	if !isBase64 {
		wantKeys = slicesDelete(wantKeys, "payload_encoding")
	}
	if len(msg.Metadata) == 0 {
		wantKeys = slicesDelete(wantKeys, "metadata")
	}
	require.Equal(t, wantKeys, keys)
	require.Equal(t, string([]rune(eventType)), decodeJSONString(t, values["type"]))
	if id != "" {
		require.Equal(t, string([]rune(id)), decodeJSONString(t, values["id"]))
	}
	require.Equal(t, wantValue, string(values["payload"]))
	if isBase64 {
		require.Equal(t, `"base64"`, string(values["payload_encoding"]))
	}
	require.Equal(t, msg.UUID, decodeJSONString(t, values["uuid"]))
	if len(msg.Metadata) > 0 {
		var md message.Metadata
		require.NoError(t, json.Unmarshal(values["metadata"], &md))
		require.Equal(t, msg.Metadata, md)
	}

	msg2, err := m.Unmarshal(topic, out)
	require.NoError(t, err, "Unmarshal refuses what Marshal wrote: %.200q", out)
	require.Equal(t, msg.UUID, msg2.UUID)
	if isBase64 {
		require.Equal(t, []byte(msg.Payload), []byte(msg2.Payload))
	} else {
		require.Equal(t, wantValue, string(msg2.Payload))
	}
	require.Equal(t, msg.Metadata, msg2.Metadata)

	out2, err := m.Marshal(topic, msg2)
	require.NoError(t, err)
	require.Equal(t, string(out), string(out2))
}

// envelopeMembers returns the member names of the JSON object body in order,
// and their values.
func envelopeMembers(t *testing.T, body []byte) ([]string, map[string]json.RawMessage) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	_, err := dec.Token()
	require.NoError(t, err)
	var keys []string
	values := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		require.NoError(t, err)
		key := tok.(string)
		var v json.RawMessage
		require.NoError(t, dec.Decode(&v))
		keys = append(keys, key)
		values[key] = v
	}
	return keys, values
}

// decodeJSONString decodes the JSON string literal raw with encoding/json.
func decodeJSONString(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal(raw, &s))
	return s
}

func slicesDelete(s []string, v string) []string {
	out := s[:0:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}
