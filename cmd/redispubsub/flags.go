package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// newFlagSet returns a flag set whose usage is usage, the flags, then
// example. It prints nothing by itself: parse reports errors.
func newFlagSet(name, usage, example string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), example)
	}
	return fs
}

// parse parses args with fs and returns the positional arguments, and -1 to
// go on, or the exit status to return now: 0 after --help (printed on
// stdout), 2 after a usage error (printed on stderr). Flags may follow
// positional arguments unless first is set (then the first positional
// argument ends the flags); "--" ends the flags either way.
func (c *console) parse(fs *flag.FlagSet, args []string, first bool) ([]string, int) {
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(c.stdout)
			fs.Usage()
			return nil, exitOK
		}
		if err != nil {
			return nil, c.usageError(fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, -1
		}
		if consumed := len(args) - len(rest); first || (consumed > 0 && args[consumed-1] == "--") {
			return append(positional, rest...), -1
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// usageError prints err and where to find the usage, and returns 2.
func (c *console) usageError(name string, err error) int {
	fmt.Fprintf(c.stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
	return exitUsage
}

// listFlag is a flag that may be repeated; it collects every value.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}
