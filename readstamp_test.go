package redispubsub

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

// BenchmarkReadStamp reads the stamp of a typical stamped envelope: the
// Subscriber's reader does it for every message it reads.
func BenchmarkReadStamp(b *testing.B) {
	msg := message.NewMessage("8c0b6f4e-1d2a-4c5b-9e7f-0a1b2c3d4e5f",
		[]byte(`{"callId":"3f1c9a2e","status":"completed","result":{"items":[1,2,3]},"retry":false}`))
	msg.Metadata.Set("correlation_id", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e")
	for name, m := range map[string]Marshaler{"envelope": JSONEnvelopeMarshaler{}, "msgpack": MsgpackMarshaler{}} {
		b.Run(name, func(b *testing.B) {
			body, err := m.Marshal("t", stamped(msg, "dP6DdXXZR6ya6JcxqLn54V", 12345))
			require.NoError(b, err)
			s := string(body)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := m.(stampReader).readStamp(s); !ok {
					b.Fatal("no stamp")
				}
			}
		})
	}
}
