//go:build linux

package main

// bitset records which numbers of a stream were received.
type bitset struct {
	words []uint64
	count int
	max   int
}

// set marks n and reports whether it was new.
func (b *bitset) set(n int) bool {
	if n < 0 {
		return false
	}
	w := n / 64
	for len(b.words) <= w {
		b.words = append(b.words, 0)
	}
	bit := uint64(1) << (n % 64)
	if b.words[w]&bit != 0 {
		return false
	}
	b.words[w] |= bit
	b.count++
	if b.count == 1 || n > b.max {
		b.max = n
	}
	return true
}

// has reports whether n was marked.
func (b *bitset) has(n int) bool {
	w := n / 64
	return n >= 0 && w < len(b.words) && b.words[w]&(uint64(1)<<(n%64)) != 0
}

// last returns the largest number received, or -1.
func (b *bitset) last() int {
	if b.count == 0 {
		return -1
	}
	return b.max
}
