package redisproc

import "github.com/alkdev/watermill-redispubsub/internal/hashslot"

// SlotCount is the number of hash slots of a Redis Cluster.
const SlotCount = hashslot.Count

// KeySlot returns the hash slot of a key or channel name, as Redis Cluster
// computes it (CLUSTER KEYSLOT); see hashslot.Of.
func KeySlot(key string) int { return hashslot.Of(key) }
