//go:build stress

package tests

import (
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func init() { wmStressBuild = true }

// TestUniversalStress is the universal suite's stress variant: like
// tests.TestPubSubStressTest, it runs the suite STRESS_TEST_COUNT times
// (default 10) in parallel, here all on one Redis server. Building with
// -tags stress also compiles Watermill's own stress settings into the suite
// (its default timeout times 5, GOMAXPROCS doubled).
//
//	go test -race -tags stress -run TestUniversalStress -timeout 30m ./tests/
//	STRESS_TEST_COUNT=3 go test -tags stress -run TestUniversalStress ./tests/
func TestUniversalStress(t *testing.T) {
	count := 10
	if env := os.Getenv("STRESS_TEST_COUNT"); env != "" {
		n, err := strconv.Atoi(env)
		require.NoError(t, err, "STRESS_TEST_COUNT")
		count = n
	}
	wmRunUniversalStress(t, count)
}
