#!/usr/bin/env bash
# scripts/test.sh runs the whole test suite, as the README says:
#
#   bash scripts/test.sh                # everything
#   bash scripts/test.sh -run Fault -v  # extra `go test` flags pass through
#   GOTEST_FLAGS='-short' bash scripts/test.sh
#
# Tests start their own redis-server processes on free ports (never the
# server on 6379, if any); this script only makes sure the binary exists
# and is Redis 7 or later, installing it with apt-get when run as root. The
# same binary runs the Sentinel tests' sentinels (redis-server <conf>
# --sentinel) and the TLS tests (Debian's redis-server is built with TLS),
# so no redis-sentinel package is needed. It also installs the Node peer
# of the interop tests (tests/interop) when node and npm exist, and
# Chromium for the browser test of examples/sse when run as root with
# apt-get (without it, that test skips and this script says so).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# find_redis prints the redis-server to use, with the lookup of
# internal/redistest.Binary: $REDIS_SERVER, PATH, then the usual places.
find_redis() {
	if [[ -n "${REDIS_SERVER:-}" ]]; then
		if [[ -f "$REDIS_SERVER" && -x "$REDIS_SERVER" ]]; then
			printf '%s\n' "$REDIS_SERVER"
			return 0
		fi
		return 1
	fi
	if command -v redis-server >/dev/null 2>&1; then
		command -v redis-server
		return 0
	fi
	local p
	for p in /usr/bin/redis-server /usr/sbin/redis-server /usr/local/bin/redis-server; do
		if [[ -f "$p" && -x "$p" ]]; then
			printf '%s\n' "$p"
			return 0
		fi
	done
	return 1
}

install_help() {
	cat >&2 <<'HELP'
The tests need redis-server (Redis 7 or later, built with TLS, as Debian's
is); they start their own processes on free ports, no running Redis
service is needed, and they run Sentinel as redis-server --sentinel (no
redis-sentinel package needed). Install it:
  Debian/Ubuntu:  sudo apt-get install redis-server
  macOS:          brew install redis
or point REDIS_SERVER at a redis-server binary:
  REDIS_SERVER=/path/to/redis-server bash scripts/test.sh
HELP
}

# 1. redis-server
if ! redis_bin=$(find_redis); then
	if [[ -n "${REDIS_SERVER:-}" ]]; then
		echo "test.sh: REDIS_SERVER=$REDIS_SERVER is not an executable file" >&2
		install_help
		exit 1
	fi
	if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "test.sh: redis-server not found; installing it with apt-get" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update
		apt-get install -y --no-install-recommends redis-server
		# The package may start (or fail to start) a system service on 6379;
		# the tests do not use it, they start their own servers.
	fi
	if ! redis_bin=$(find_redis); then
		echo "test.sh: redis-server not found" >&2
		install_help
		exit 1
	fi
fi
export REDIS_SERVER="$redis_bin"
redis_version=$("$REDIS_SERVER" --version)
echo "test.sh: using $redis_version at $REDIS_SERVER"
# "Redis server v=7.0.15 sha=..." : sharded Pub/Sub, CLUSTER ADDSLOTSRANGE
# and the ACL channel rules need 7.0.
redis_major=$(sed -n 's/.* v=\([0-9]*\)\..*/\1/p' <<<"$redis_version")
if [[ -z "$redis_major" || "$redis_major" -lt 7 ]]; then
	echo "test.sh: $REDIS_SERVER is not Redis 7 or later ($redis_version)" >&2
	install_help
	exit 1
fi

# 2. nats-server, for the watermill-nats column of the bench's tests
# (internal/bench); they skip, saying so, without it.
if ! command -v nats-server >/dev/null 2>&1; then
	if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "test.sh: nats-server not found; installing it with apt-get (the bench's watermill-nats tests use it)" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y --no-install-recommends nats-server ||
			{ apt-get update && apt-get install -y --no-install-recommends nats-server; } ||
			echo "test.sh: could not install nats-server; the watermill-nats tests will skip" >&2
	else
		echo "test.sh: nats-server not found; the bench's watermill-nats tests will skip (apt-get install nats-server)"
	fi
fi

# 3. Chromium, for the browser test of examples/sse (headless, driven by
# chromedp); it skips, saying so, without it.
find_chromium() {
	local name
	for name in chromium chromium-browser google-chrome google-chrome-stable; do
		if command -v "$name" >/dev/null 2>&1; then
			command -v "$name"
			return 0
		fi
	done
	return 1
}
if ! find_chromium >/dev/null; then
	if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "test.sh: chromium not found; installing it with apt-get (the browser test of examples/sse uses it)" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y --no-install-recommends chromium ||
			{ apt-get update && apt-get install -y --no-install-recommends chromium; } ||
			echo "test.sh: could not install chromium; the browser test will skip" >&2
	else
		echo "test.sh: chromium not found and not root with apt-get: the browser test of examples/sse will skip (apt-get install chromium)"
	fi
fi
if chromium_bin=$(find_chromium); then
	echo "test.sh: browser test with $chromium_bin"
fi

# 4. the Node peer of the interop tests
interop=tests/interop
if [[ ! -f "$interop/package.json" ]]; then
	: # no interop tests in this tree
elif ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "test.sh: node/npm not found; skipping npm ci in $interop (its tests skip themselves)"
elif [[ ! -f "$interop/package-lock.json" ]]; then
	echo "test.sh: $interop has no package-lock.json; skipping npm ci"
else
	echo "test.sh: npm ci in $interop"
	(cd "$interop" && npm ci --no-audit --no-fund)
fi

# 5. the tests. GOTEST_FLAGS is split into words on purpose. The otel
# module (OpenTelemetry tracing, a module of its own so that the core does
# not require OpenTelemetry) is not in ./... of the core: it runs next.
# shellcheck disable=SC2086
go test -race -count=1 -timeout 15m ${GOTEST_FLAGS:-} "$@" ./...
# shellcheck disable=SC2086
(cd otel && go test -race -count=1 -timeout 10m ${GOTEST_FLAGS:-} "$@" ./...)

# 6. the tests whose full size the race detector makes too slow, once more
# without it: 1 GiB past a stalled subscription (128 MiB under -race),
# 100,000 topics on one Subscriber (10,000), the 100,000-message burst into
# a slow consumer (20,000), 5,000 stalled subscriptions spending the budget
# (2,000), 6,000 streams on one pattern (4,600) and 10,000 SSE streams
# (2,000).
if [[ $# -eq 0 ]]; then
	go test -count=1 -timeout 5m ${GOTEST_FLAGS:-} \
		-run '^(TestFaultStalledConsumerHeapBounded|TestHundredThousandTopics|TestBurstIntoASlowConsumerIsDeliveredWhole|TestBudgetSpentByThousandsOfStalledSubscriptionsKeepsTheReaderUp|TestSequenceStreamsBeyondTheTrackedOnesCountNoFalseGaps)$' ./tests/
	go test -count=1 -timeout 5m ${GOTEST_FLAGS:-} -run '^TestEventTarget_ManyTopicsAddedAndRemoved$' .
	# Its -v output is long: on success only the result and the test's own
	# lines (the measurements) are printed, on failure all of it.
	sse_out=$(mktemp)
	trap 'rm -f "$sse_out"' EXIT
	if go test -count=1 -timeout 5m ${GOTEST_FLAGS:-} -run '^TestHandler_TenThousandStreams$' -v ./sse/ >"$sse_out" 2>&1; then
		grep -E '^(---|ok|FAIL)|scale_test' "$sse_out"
	else
		status=$?
		cat "$sse_out"
		exit "$status"
	fi
fi
