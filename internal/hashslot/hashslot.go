// Package hashslot computes Redis Cluster hash slots, for the sharded
// Subscriber and for the test harness (whose tests check it against
// CLUSTER KEYSLOT).
package hashslot

import "strings"

// Count is the number of hash slots of a Redis Cluster.
const Count = 16384

// Of returns the hash slot of a key or channel name, as Redis Cluster
// computes it (CLUSTER KEYSLOT): CRC16 (XMODEM) modulo 16384 of the name,
// or of its hash tag, the part between the first "{" and the next "}" when
// that part is not empty.
func Of(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % Count)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0).
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
