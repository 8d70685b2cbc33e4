# Targets for what does not fit `go test` (see scripts/test.sh for the tests).

SOAK_DURATION ?= 10m
SOAK_FLAGS ?=

.PHONY: soak

# soak runs Publishers and Subscribers against a redis-server of its own,
# with periodic server kills and CLIENT KILLs, and prints rates, reconnects,
# gaps, drops and RSS: make soak SOAK_DURATION=1m SOAK_FLAGS="-kill-every 15s"
soak:
	go run ./cmd/soak -duration $(SOAK_DURATION) $(SOAK_FLAGS)
