//go:build !race

package testutil

// Race reports whether the test binary was built with -race, under which
// the tests that move much data move less.
const Race = false
