package exampleredis

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
)

// Logger returns the Watermill logger the examples give the libraries: slog
// on stderr at Warn level, because the libraries should only speak up about
// problems while the example's story goes to stdout.
func Logger() watermill.LoggerAdapter {
	return watermill.NewSlogLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// Printer returns a func that writes one line to out, fmt.Printf style with a
// newline appended. It is safe for concurrent use (handlers print from
// several goroutines), so lines never interleave.
func Printer(out io.Writer) func(format string, args ...any) {
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
}
