//go:build linux

package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// memory samples VmRSS every second.
type memory struct {
	start, max atomic.Int64
	heapMax    atomic.Uint64
	done, quit chan struct{}
	end        int64
}

func startMemory() *memory {
	m := &memory{done: make(chan struct{}), quit: make(chan struct{})}
	m.start.Store(m.rss())
	m.max.Store(m.start.Load())
	go func() {
		defer close(m.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-m.quit:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *memory) sample() {
	if r := m.rss(); r > m.max.Load() {
		m.max.Store(r)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > m.heapMax.Load() {
		m.heapMax.Store(ms.HeapInuse)
	}
}

func (m *memory) stop() {
	close(m.quit)
	<-m.done
	m.sample()
	m.end = m.rss()
}

// rss returns VmRSS in KiB, or -1.
func (m *memory) rss() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

func (s *soak) printMemory(m *memory) {
	fmt.Printf("soak: RSS start %s, max %s, end %s (after closing); Go HeapInuse max %.1f MiB\n",
		kib(m.start.Load()), kib(m.max.Load()), kib(m.end), float64(m.heapMax.Load())/(1<<20))
}

func kib(k int64) string {
	if k < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(k)/1024)
}
